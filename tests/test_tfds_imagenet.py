"""imagenet2012 through tensorflow-datasets (its mock data): train -> predictions ->
per-class and PIE -> imagenet2012_corrupted and imagenet_a -> robustness."""
import os

import numpy as np
import pandas as pd

import study_stages as stages
from pie.data import sources
from pie.io import records

import tensorflow_datasets as tfds

N = 12  # mock images per split: 12 training steps of 1


def test_imagenet2012_study_end_to_end(tmp_path):
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=N):
        stages.train.run(workdir=workdir, dataset="imagenet2012", data_dir=data_dir,
                         **stages.TINY)
        stages.per_class_and_pie(workdir, tstatistic=False)
        stages.corruptions.run(workdir=workdir, tfds_corrupted="imagenet2012_corrupted",
                               corruptions="gaussian_noise", severities="1")
        stages.corruptions.run(workdir=workdir, tfds_corrupted="imagenet_a")
        stages.analyze.run(workdir)
        images, labels, ids = sources.load("imagenet2012", data_dir=data_dir).eval_arrays()
    config = records.read_dataset_config(workdir)
    assert (config["family"], config["num_classes"]) == ("imagenet", 1000)
    member = os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0")
    assert "--augment=inception_crop" in open(os.path.join(member, "flags.txt")).read()
    assert stages.member_predictions(workdir)["label"].tolist() == labels.tolist()
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    for subset in ("pie", "non_pie"):
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert back.num_classes == 1000
        assert np.array_equal(back_images, images[back_ids])  # the JPEG, cropped once
        assert np.array_equal(back_labels, labels[back_ids])
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    assert set(accuracy["distribution"]) >= {"clean", "gaussian_noise/1", "imagenet_a"}
