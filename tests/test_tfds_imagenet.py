"""imagenet2012 through tensorflow-datasets (its mock data): train -> predictions ->
per-class and PIE -> imagenet2012_corrupted and imagenet_a -> robustness."""
import os

import numpy as np
import pandas as pd

from pie.data import sources
from pie.io import records
from tfds_mock_stage import run_mocked

import tensorflow_datasets as tfds

N = 12  # mock images per split: 12 training steps of 1


def test_imagenet2012_study_end_to_end(tmp_path):
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    w = f"--workdir={workdir}"
    run_mocked(N, "save_checkpoint.train", w, "--dataset=imagenet2012",
               f"--data_dir={data_dir}", "--model=small_cnn", "--width=4",
               "--sparsities=0,0.5", "--seeds=2", "--epochs=1", "--batch_size=1")
    config = records.read_dataset_config(workdir)
    assert (config["family"], config["num_classes"]) == ("imagenet", 1000)
    member = os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0")
    assert "--augment=inception_crop" in open(os.path.join(member, "flags.txt")).read()
    for stage in ("pie_dataset_gen.predictions", "per_class_accuracy.aggregate_ckpt_metrics",
                  "pie_dataset_gen.aggregate_predictions",
                  "pie_dataset_gen.generate_pie_dataset"):
        run_mocked(N, stage, w)
    run_mocked(N, "robustness_tests.corruptions", w, "--tfds_corrupted=imagenet2012_corrupted",
               "--corruptions=gaussian_noise", "--severities=1")
    run_mocked(N, "robustness_tests.corruptions", w, "--tfds_corrupted=imagenet_a")
    run_mocked(N, "robustness_tests.analyze", w)

    with tfds.testing.mock_data(num_examples=N):
        images, labels, ids = sources.load("imagenet2012", data_dir=data_dir).eval_arrays()
    frame = pd.read_csv(records.predictions_path(workdir, "dense_0_seed0"))
    assert frame["label"].tolist() == labels.tolist() and labels.max() < 1000
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    for subset in ("pie", "non_pie"):
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert back.num_classes == 1000
        assert np.array_equal(back_images, images[back_ids])  # the JPEG, cropped once
        assert np.array_equal(back_labels, labels[back_ids])
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    assert set(accuracy["distribution"]) >= {"clean", "gaussian_noise/1", "imagenet_a"}
