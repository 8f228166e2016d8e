"""The ImageNet TFRecord layout, as a user brings it: labels, names, sizes, views, PIE subsets.

The data is written by the tests (tests/imagenet_layout.py): JPEGs of varying
non-square sizes, labels 1..3 with class texts, two train shards, one validation shard.
"""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from conftest import error_lines, run_stage
import imagenet_layout as layout
import study_stages as stages
from pie.data import size_cache, sources, tfrecords, views
from pie.io import records

import tensorflow as tf  # after pie: Keras 2 is selected

K = 3
TRAIN_FLAGS = ["--model=small_cnn", "--width=4", "--sparsities=0,0.5", "--seeds=2",
               "--epochs=1", "--batch_size=1", "--learning_rate=0.01"]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("imagenet"))
    validation = layout.write_imagenet_layout(folder, num_classes=K)
    return folder, validation


def _fresh_copy(imagenet_dir, tmp_path):
    folder = str(tmp_path / "copy")
    os.makedirs(folder)
    for name in os.listdir(imagenet_dir[0]):
        if name != size_cache.CACHE_NAME:
            tf.io.gfile.copy(os.path.join(imagenet_dir[0], name), os.path.join(folder, name))
    return folder


# ----------------------------------------------------------------------- the loader


def test_labels_are_zero_based_and_classes_named_by_their_texts(imagenet_dir):
    folder, validation = imagenet_dir
    source = sources.load("tfrecord:" + folder)
    assert source.num_classes == K
    assert source.class_names == layout.TEXTS[:K]
    assert (source.train_size, source.eval_size) == (12, 9)
    _, labels, ids = source.eval_arrays()
    assert labels.tolist() == [label - 1 for _, label in validation]
    assert ids.tolist() == list(range(9))
    # Another convention: with offset 0 the same labels are 1..3 of four classes.
    zero_based = sources.load("tfrecord:" + folder, label_offset=0)
    assert zero_based.num_classes == K + 1
    assert zero_based.class_names == ("0",) + layout.TEXTS[:K]
    assert zero_based.eval_arrays()[1].tolist() == [label for _, label in validation]


def test_eval_images_are_the_resized_centre_crop_of_each_jpeg(imagenet_dir):
    folder, validation = imagenet_dir
    images, _, _ = sources.load("tfrecord:" + folder).eval_arrays()
    assert images.shape == (9, 224, 224, 3) and images.dtype == np.uint8
    for image, (encoded, _) in zip(images, validation):
        decoded = tf.io.decode_jpeg(encoded, channels=3)
        assert decoded.shape[0] != decoded.shape[1]  # the fixture's images are not square
        expected = views.imagenet_eval_geometry(decoded).numpy()
        assert np.array_equal(image, expected)


def test_sizes_are_counted_once_and_cached_in_the_users_cache(imagenet_dir, tmp_path,
                                                              monkeypatch):
    """Never into the data folder (docs/contracts.md, No path through a link)."""
    monkeypatch.setenv("PIE_CACHE_DIR", str(tmp_path / "cache"))
    folder = _fresh_copy(imagenet_dir, tmp_path)
    sources.load("tfrecord:" + folder)
    assert not os.path.exists(os.path.join(folder, size_cache.CACHE_NAME))
    cache = json.load(open(tmp_path / "cache" / size_cache.WORKDIR_CACHE_NAME))
    assert {name: entry["records"] for name, entry in cache["folders"][folder].items()} == {
        "train-00000-of-00002": 6, "train-00001-of-00002": 6, "validation-00000-of-00001": 9}

    def no_scan(path):
        raise AssertionError(f"{path} scanned again")
    monkeypatch.setattr(tfrecords, "scan_file", no_scan)
    assert sources.load("tfrecord:" + folder).train_size == 12
    # A changed file is counted again.
    layout.write_shard(os.path.join(folder, "train-00001-of-00002"),
                       [(layout.jpeg(np.random.default_rng(1), 1), 1, layout.TEXTS[0])])
    with pytest.raises(AssertionError, match="train-00001-of-00002 scanned again"):
        sources.load("tfrecord:" + folder)


def test_size_cache_goes_to_the_workdir_when_the_data_is_read_only(imagenet_dir, tmp_path,
                                                                   monkeypatch):
    folder = _fresh_copy(imagenet_dir, tmp_path)
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    writable = size_cache._write
    monkeypatch.setattr(size_cache, "_write", lambda path, data: (
        False if path.startswith(folder) else writable(path, data)))
    source = sources.load("tfrecord:" + folder, cache_dir=workdir)
    assert not os.path.exists(os.path.join(folder, size_cache.CACHE_NAME))
    shared = json.load(open(os.path.join(workdir, size_cache.WORKDIR_CACHE_NAME)))
    assert sum(e["records"] for e in shared["folders"][folder].values()) == 21
    monkeypatch.setattr(tfrecords, "scan_file", lambda path: 1 / 0)
    assert sources.load("tfrecord:" + folder, cache_dir=workdir).eval_size == source.eval_size


def test_remote_folders_are_read_through_tf_io_gfile(tmp_path, monkeypatch):
    monkeypatch.setenv("PIE_CACHE_DIR", str(tmp_path / "cache"))
    # ram:// exists only inside TensorFlow: os.path and glob cannot see it.
    folder = "ram://imagenet_layout_test"
    validation = layout.write_imagenet_layout(folder, num_classes=K, train_per_shard=2,
                                              validation=3)
    assert not os.path.exists(folder)
    source = sources.load("tfrecord:" + folder)
    assert source.class_names == layout.TEXTS[:K] and source.train_size == 4
    assert source.eval_arrays()[1].tolist() == [label - 1 for _, label in validation]
    inputs, labels = next(iter(source.train_batches(4, seed=0, epoch=0)))
    assert inputs.shape == (4, 224, 224, 3) and sorted(labels.numpy()) == [0, 0, 1, 1]
    assert size_cache.CACHE_NAME not in tf.io.gfile.listdir(folder)
    assert folder in json.load(open(tmp_path / "cache" / size_cache.WORKDIR_CACHE_NAME))[
        "folders"]


def test_shuffle_buffer_is_bounded_in_bytes():
    # ImageNet: 1.28 M images of ~110 kB; a 1 GiB buffer holds ~9,761 of them.
    assert tfrecords.shuffle_buffer(1_281_167, 110_000, sources.SHUFFLE_BYTES) == 9761
    assert tfrecords.shuffle_buffer(12, 30_000, sources.SHUFFLE_BYTES) == 12
    assert tfrecords.shuffle_buffer(100, 10 ** 12, sources.SHUFFLE_BYTES) == 1


# --------------------------------------------------------------------------- views


def _one_image_folder(tmp_path):
    folder = str(tmp_path / "one")
    rng = np.random.default_rng(3)
    os.makedirs(folder)
    layout.write_shard(os.path.join(folder, "train-00000-of-00001"),
                       [(layout.jpeg(rng, 2), 2, layout.TEXTS[1])])
    layout.write_shard(os.path.join(folder, "validation-00000-of-00001"),
                       [(layout.jpeg(rng, 1), 1, layout.TEXTS[0]),
                        (layout.jpeg(rng, 2), 2, layout.TEXTS[1])])
    return folder


@pytest.mark.parametrize("augment", ["inception_crop", "flip_crop"])
def test_training_views_differ_per_seed_and_epoch_and_repeat_exactly(tmp_path, augment):
    source = sources.load("tfrecord:" + _one_image_folder(tmp_path))

    def view(seed, epoch):
        inputs, _ = next(iter(source.train_batches(1, seed, epoch, augment=augment)))
        return inputs.numpy()[0]
    first = view(0, 0)
    assert np.array_equal(first, view(0, 0))
    assert not np.array_equal(first, view(0, 1))  # another epoch, another view
    assert not np.array_equal(first, view(1, 0))  # another member, another view
    plain, _ = next(iter(source.train_batches(1, 0, 0, augment="none")))
    again, _ = next(iter(source.train_batches(1, 5, 7, augment="none")))
    assert np.array_equal(plain.numpy(), again.numpy())


def test_auto_views_per_family():
    assert [views.resolve("auto", family) for family in ("imagenet", "cifar", "small", "toy")] \
        == ["inception_crop", "flip_crop", "none", "none"]
    with pytest.raises(ValueError, match=r"^--augment=flip_crop needs images; the toy sets"):
        views.resolve("flip_crop", "toy")
    # digits are never flipped: every epoch trains on the same pixels.
    source = sources.load("digits")
    batches = [np.concatenate([x.numpy() for x, _ in source.train_batches(2000, 0, epoch)])
               for epoch in (0, 1)]
    assert np.array_equal(np.sort(batches[0].reshape(len(batches[0]), -1), axis=0),
                          np.sort(batches[1].reshape(len(batches[1]), -1), axis=0))


# ------------------------------------------------------------------------ bad input


def _fails_to_train(folder, tmp_path, message):
    """The training stage stops with exactly this error, before writing anything."""
    workdir = str(tmp_path / "w")
    with pytest.raises(sources.DataError) as raised:
        stages.train.run(workdir=workdir, dataset=f"tfrecord:{folder}", **stages.TINY)
    assert str(raised.value) == message
    assert not os.path.exists(workdir)


def _folder_with(tmp_path, items, name="validation-00000-of-00001"):
    folder = str(tmp_path / "bad")
    os.makedirs(folder, exist_ok=True)
    layout.write_shard(os.path.join(folder, name), items)
    return folder


def test_label_outside_the_classes_names_file_and_label(tmp_path):
    rng = np.random.default_rng(0)
    folder = _folder_with(tmp_path, [(layout.jpeg(rng, 1), 1, "a"), (layout.jpeg(rng, 0), 0, "z")])
    path = os.path.join(folder, "validation-00000-of-00001")
    _fails_to_train(folder, tmp_path, (
        f"label 0 in '{path}' is outside the 1 classes: with label offset 1 it is class -1, "
        "not in 0..0 (set --label_offset to the labels' first class: 1 for ImageNet, 0 for "
        "0-based labels)"))
    assert sources.load("tfrecord:" + folder, label_offset=0).num_classes == 2


def test_two_texts_for_one_label_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    folder = _folder_with(tmp_path, [(layout.jpeg(rng, 1), 1, "tench"),
                                     (layout.jpeg(rng, 1), 1, "goldfish")])
    path = os.path.join(folder, "validation-00000-of-00001")
    _fails_to_train(folder, tmp_path,
                    f"'{path}': label 1 has two class texts, 'tench' and 'goldfish'")


def test_non_image_bytes_are_an_error(tmp_path):
    rng = np.random.default_rng(0)
    folder = _folder_with(tmp_path, [(layout.jpeg(rng, 1), 1, "a"), (b"<html>", 1, "a")])
    path = os.path.join(folder, "validation-00000-of-00001")
    _fails_to_train(folder, tmp_path, f"record 1 of '{path}': image/encoded is not an image "
                                      "(JPEG, PNG, GIF or BMP)")


def _corrupt_folder(imagenet_dir, tmp_path):
    folder = _fresh_copy(imagenet_dir, tmp_path)
    path = os.path.join(folder, "train-00001-of-00002")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the record's checksum fails
    open(path, "wb").write(bytes(data))
    return folder, path


def test_corrupt_record_is_one_line_exit_2_and_nothing_written(imagenet_dir, tmp_path):
    folder, path = _corrupt_folder(imagenet_dir, tmp_path)
    with pytest.raises(sources.DataError, match=f"^corrupt TFRecord file '{path}': "):
        sources.load("tfrecord:" + folder)
    workdir = str(tmp_path / "w")
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}",
                       f"--dataset=tfrecord:{folder}", *TRAIN_FLAGS, check=False)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: corrupt TFRecord file '{path}': ")
    assert not os.path.exists(workdir)


# -------------------------------------------------------------- the whole pipeline


def test_population_predictions_and_pie_subsets_read_back_exactly(imagenet_dir, tmp_path):
    folder, validation = imagenet_dir
    workdir = str(tmp_path / "w")
    stages.train.run(workdir=workdir, dataset=f"tfrecord:{folder}", **stages.TINY)
    config = records.read_dataset_config(workdir)
    assert config["num_classes"] == K and config["class_names"] == list(layout.TEXTS[:K])
    assert records.read_json(os.path.join(workdir, "classes.json")) == list(layout.TEXTS[:K])
    member = os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0")
    assert "--augment=inception_crop" in open(os.path.join(member, "flags.txt")).read()
    assert records.read_json(os.path.join(member, "meta.json"))["steps"] == 12

    stages.per_class_and_pie(workdir)
    frame = stages.member_predictions(workdir)
    assert frame["label"].tolist() == [label - 1 for _, label in validation]
    assert frame["predicted"].between(0, K - 1).all()
    tstat = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic.csv"))
    assert tstat["class_id"].tolist() == list(range(K))
    assert tstat["class_name"].tolist() == list(layout.TEXTS[:K])

    original = sources.load("tfrecord:" + folder)
    images, labels, ids = original.eval_arrays()
    table = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"), dtype=str)
    # Each row leads back to its record: shard and index, and the record's file name.
    shard = "validation-00000-of-00001"
    stored = [tf.train.Example.FromString(r) for r in
              tf.data.TFRecordDataset(os.path.join(folder, shard)).as_numpy_iterator()]
    image_ids = table["image_id"].astype(int)
    assert table["record_key"].tolist() == [f"{shard}:{i}" for i in image_ids]
    assert table["filename"].tolist() == [
        stored[i].features.feature["image/filename"].bytes_list.value[0].decode()
        for i in image_ids]
    assert table["filename"].str.match(r"^ILSVRC2012_val_\d{8}\.JPEG$").all()
    table = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
    root = os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5")
    seen = []
    for subset, flag in (("pie", True), ("non_pie", False)):
        expected = table[table["is_pie"].astype(bool) == flag]["image_id"].to_numpy()
        back = sources.load("tfrecord:" + os.path.join(root, subset))
        back_images, back_labels, back_ids = back.eval_arrays()
        assert back.class_names == layout.TEXTS[:K] and back.family == "imagenet"
        assert back_ids.tolist() == expected.tolist()
        # Exactly the pixels the analysis predicted on: the JPEG is cropped once.
        assert np.array_equal(back_images, images[back_ids])
        assert np.array_equal(back_labels, labels[back_ids])
        encoded = [ex["encoded"] for ex in back.eval_encoded().as_numpy_iterator()]
        assert encoded == [validation[i][0] for i in back_ids]  # the JPEG stays that JPEG
        # Every feature of the source's record is kept, byte for byte (the 1-based
        # label too), with the image's PIE columns and its way back to the file.
        written = [tf.train.Example.FromString(ex["serialized"])
                   for ex in back.eval_serialized().as_numpy_iterator()]
        for copy, image_id in zip(written, back_ids):
            source_features = stored[image_id].features.feature
            assert len(source_features) == 11
            for name, feature in source_features.items():
                assert (copy.features.feature[name].SerializeToString()
                        == feature.SerializeToString()), name
            row = table[table["image_id"] == image_id].iloc[0]
            assert copy.features.feature["record_key"].bytes_list.value == [
                row["record_key"].encode()]
            assert copy.features.feature["is_pie"].int64_list.value == [int(flag)]
        seen.extend(back_ids.tolist())
    assert sorted(seen) == ids.tolist()


def test_empty_subset_reads_back_as_zero_images(tmp_path):
    from pie_dataset_gen import generate_pie_dataset as generate
    source = sources.load("digits")
    writer = generate.SubsetWriter(str(tmp_path / "pie"), "pie", 0, 10)
    writer.close(source, {})
    back = sources.load("tfrecord:" + str(tmp_path / "pie"))
    images, labels, ids = back.eval_arrays()
    assert images.shape == (0, 8, 8, 1) and len(labels) == len(ids) == 0
    assert back.num_classes == 10 and back.eval_size == 0


def test_pie_records_refuse_a_row_of_another_record():
    from pie_dataset_gen import generate_pie_dataset as generate
    row = {"label": 2, "record_key": "validation-00000-of-00001:4"}
    generate.check_row(row, 4, 2, "validation-00000-of-00001:4")
    generate.check_row(dict(row, record_key=""), 4, 2, "")  # data without records
    with pytest.raises(records.ContractError, match=re.escape(
            "pie.csv gives image 4 the label 2 (record validation-00000-of-00001:4), the "
            "data 2 (record validation-00000-of-00001:5): the table was made from other data")):
        generate.check_row(row, 4, 2, "validation-00000-of-00001:5")
