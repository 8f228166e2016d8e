"""cifar10 through tensorflow-datasets (its mock data): train -> predictions -> per-class
and PIE -> PIE subsets that read back exactly -> precomputed corruptions -> robustness."""
import os

import numpy as np
import pandas as pd

import study_stages as stages
from pie.data import sources
from pie.io import records

import tensorflow_datasets as tfds

N = 16  # mock images per split: 16 training steps of 1


def test_cifar10_study_end_to_end(tmp_path):
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=N):
        stages.train.run(workdir=workdir, dataset="cifar10", data_dir=data_dir, **stages.TINY)
        stages.per_class_and_pie(workdir, tstatistic=False)
        stages.corruptions.run(workdir=workdir, tfds_corrupted="cifar10_corrupted",
                               corruptions="gaussian_noise", severities="1")
        stages.analyze.run(workdir)
        source = sources.load("cifar10", data_dir=data_dir)
        images, labels, ids = source.eval_arrays()
        encoded = [ex["encoded"] for ex in source.eval_encoded().as_numpy_iterator()]
    config = records.read_dataset_config(workdir)
    assert (config["family"], config["num_classes"]) == ("cifar", 10)
    assert len(config["class_names"]) == 10
    flags_txt = open(os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0",
                                  "flags.txt")).read()
    assert "--augment=flip_crop" in flags_txt and "--steps_per_epoch" not in flags_txt
    assert stages.member_predictions(workdir)["label"].tolist() == labels.tolist()
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    seen = []
    for subset in ("pie", "non_pie"):
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert np.array_equal(back_images, images[back_ids])
        assert np.array_equal(back_labels, labels[back_ids])
        assert [ex["encoded"] for ex in back.eval_encoded().as_numpy_iterator()] == [
            encoded[i] for i in back_ids]  # tfds's own PNG bytes
        seen.extend(back_ids.tolist())
    assert sorted(seen) == ids.tolist()
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    assert set(accuracy["distribution"]) >= {"clean", "gaussian_noise/1"}
    assert (accuracy[accuracy["distribution"] != "mean_corruption"]["n_images"] == N).all()
