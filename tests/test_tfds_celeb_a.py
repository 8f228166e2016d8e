"""celeb_a through tensorflow-datasets (its mock data), labelled by Blond_Hair:
train -> predictions -> per-class and PIE -> subgroups by Male and Young ->
synthetic corruptions -> robustness."""
import os

import numpy as np
import pandas as pd
import pytest

import study_stages as stages
from pie.data import sources
from pie.io import records

import tensorflow_datasets as tfds

N = 16  # mock images per split: 16 training steps of 1


# An end-to-end study (about 30 s): with the smoke studies in the slow step, which CI runs.
@pytest.mark.slow
def test_celeb_a_study_end_to_end(tmp_path):
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=N):
        stages.train.run(workdir=workdir, dataset="celeb_a", data_dir=data_dir,
                         label_attribute="Blond_Hair", **stages.TINY)
        stages.per_class_and_pie(workdir, tstatistic=False)
        stages.subgroups.run(workdir, attributes=["Male", "Young"])
        stages.corruptions.run(workdir=workdir, corruptions="gaussian_noise", severities="1")
        stages.analyze.run(workdir)
        source = sources.load("celeb_a", data_dir=data_dir, label_attribute="Blond_Hair",
                              group_attributes=["Male", "Young"])
        images, labels, ids = source.eval_arrays()
        groups = source.attributes()
    config = records.read_dataset_config(workdir)
    assert config["class_names"] == ["not_Blond_Hair", "Blond_Hair"]
    assert config["family"] == "imagenet"
    assert stages.member_predictions(workdir)["label"].tolist() == labels.tolist()
    table = pd.read_csv(os.path.join(workdir, "per_class", "subgroups.csv"))
    assert set(table["attribute"]) == {"Male", "Young"}
    for attribute in ("Male", "Young"):
        rows = table[table["attribute"] == attribute].drop_duplicates("group")
        expected = np.bincount(groups[attribute], minlength=2)
        assert {int(g): int(n) for g, n in zip(rows["group"], rows["n_images"])} == {
            g: int(expected[g]) for g in range(2) if expected[g]}
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    seen = []
    for subset in ("pie", "non_pie"):
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert back.class_names == ("not_Blond_Hair", "Blond_Hair")
        assert np.array_equal(back_images, images[back_ids])  # the JPEG, cropped once
        assert np.array_equal(back_labels, labels[back_ids])
        seen.extend(back_ids.tolist())
    assert sorted(seen) == ids.tolist()
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    assert set(accuracy["distribution"]) >= {"clean", "gaussian_noise/1"}
