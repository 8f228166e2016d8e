"""celeb_a through tensorflow-datasets (its mock data), labelled by Blond_Hair:
train -> predictions -> per-class and PIE -> subgroups by Male and Young ->
synthetic corruptions -> robustness."""
import os

import numpy as np
import pandas as pd

from pie.data import sources
from pie.io import records
from tfds_mock_stage import run_mocked

import tensorflow_datasets as tfds

N = 16  # mock images per split: 16 training steps of 1


def test_celeb_a_study_end_to_end(tmp_path):
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    w = f"--workdir={workdir}"
    run_mocked(N, "save_checkpoint.train", w, "--dataset=celeb_a", f"--data_dir={data_dir}",
               "--label_attribute=Blond_Hair", "--model=small_cnn", "--width=4",
               "--sparsities=0,0.5", "--seeds=2", "--epochs=1", "--batch_size=1")
    config = records.read_dataset_config(workdir)
    assert config["class_names"] == ["not_Blond_Hair", "Blond_Hair"]
    assert config["family"] == "imagenet"
    for stage in ("pie_dataset_gen.predictions", "per_class_accuracy.aggregate_ckpt_metrics",
                  "pie_dataset_gen.aggregate_predictions",
                  "pie_dataset_gen.generate_pie_dataset"):
        run_mocked(N, stage, w)
    run_mocked(N, "per_class_accuracy.subgroups", w, "--group_attributes=Male,Young")
    run_mocked(N, "robustness_tests.corruptions", w, "--corruptions=gaussian_noise",
               "--severities=1")
    run_mocked(N, "robustness_tests.analyze", w)

    with tfds.testing.mock_data(num_examples=N):
        source = sources.load("celeb_a", data_dir=data_dir, label_attribute="Blond_Hair",
                              group_attributes=["Male", "Young"])
        images, labels, ids = source.eval_arrays()
        groups = source.attributes()
    frame = pd.read_csv(records.predictions_path(workdir, "dense_0_seed0"))
    assert frame["label"].tolist() == labels.tolist()
    subgroups = pd.read_csv(os.path.join(workdir, "per_class", "subgroups.csv"))
    assert set(subgroups["attribute"]) == {"Male", "Young"}
    males = subgroups[(subgroups["attribute"] == "Male") & (subgroups["group"].astype(str)
                                                             .isin(["1", "True"]))]
    assert (males["n_images"] == int(groups["Male"].sum())).all()
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    for subset in ("pie", "non_pie"):
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert back.class_names == ("not_Blond_Hair", "Blond_Hair")
        assert np.array_equal(back_images, images[back_ids])  # the JPEG, cropped once
        assert np.array_equal(back_labels, labels[back_ids])
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    assert set(accuracy["distribution"]) >= {"clean", "gaussian_noise/1"}
