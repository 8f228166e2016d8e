"""TFRecords as users bring them (issue 25.3): the family and channels come from the
data as a whole, every image decodes to them whatever its encoding, and a set that
does not read fails before the workdir records anything."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import imagenet_layout as layout
import user_images
from pie.data import sources, tfrecords
from pie.io import records
from save_checkpoint import train

import tensorflow as tf  # after pie: Keras 2 is selected


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("mixed"))
    kinds = user_images.write_mixed_layout(folder, num_classes=2, train_per_shard=10,
                                           validation=6)
    return folder, kinds


def test_a_grey_48px_first_record_and_tiny_data_train_with_default_flags(mixed_dir, tmp_path,
                                                                         capsys):
    # Issue 25.3: the first validation record is a 48-px grey JPEG, CMYK JPEGs and PNG
    # bytes are among the others. Issue 25.5: 2 classes x 10 training images, trained
    # with the default epochs (8) and batch size (64): 8 steps, magnitude pruning during
    # training (a small model and population, to keep the test short).
    folder, kinds = mixed_dir
    assert kinds[0] == ("L", "JPEG") and {("CMYK", "JPEG"), ("RGB", "PNG")} <= set(kinds)
    first = next(iter(tf.data.TFRecordDataset(os.path.join(folder,
                                                           "validation-00000-of-00001"))))
    encoded = tf.io.parse_single_example(first, tfrecords.READ_FEATURES)["image/encoded"]
    assert tuple(tfrecords.decode(encoded, 0).shape) == (48, 56, 1)
    workdir = str(tmp_path / "w")
    train.run(workdir=workdir, dataset=f"tfrecord:{folder}", model="mlp", width=4,
              sparsities="0.5", seeds=1)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("data: ")] == [
        f"data: 'tfrecord:{folder}': 2 classes ('tench', 'goldfish'), family imagenet, input "
        "224x224x3, images: 20 training, 6 eval"]
    assert ("pruning schedule: 8 training steps are too few for 10 mask updates: "
            "begin_step 0, end_step 4, frequency 1 (4 updates)") in out
    with open(os.path.join(workdir, "dataset.json")) as handle:
        assert json.load(handle)["family"] == "imagenet"
    manifest = records.read_manifest(workdir)
    assert manifest["member_id"].tolist() == ["magnitude_0.5_seed0"]
    assert abs(manifest["measured_sparsity"].iloc[0] - 0.5) < 0.01
    source = sources.load_for_workdir(workdir)
    assert source.input_shape == (224, 224, 3)
    images, labels, _ = source.eval_arrays()
    assert images.shape == (6, 224, 224, 3) and labels.tolist() == [0, 1] * 3


def _encoded(mode, fmt, pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, fmt, quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("CMYK", "JPEG"), ("L", "JPEG"),
                                       ("RGB", "PNG"), ("L", "PNG"), ("LA", "PNG"),
                                       ("RGBA", "PNG"), ("P", "PNG")])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_encoding_decodes_to_the_channels_asked(mode, fmt, channels):
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    encoded = _encoded(mode, fmt, pixels)
    image = tfrecords.decode(tf.constant(encoded), channels).numpy()
    assert image.shape == (20, 24, channels)
    # The grey level PIL gives the same image: within JPEG's and the conversions' error.
    grey = np.asarray(Image.open(io.BytesIO(encoded)).convert("L"), np.float64)
    assert abs(image.astype(np.float64).mean() - grey.mean()) < 6


def test_sample_decides_family_and_channels_never_the_first_record():
    assert tfrecords.sample_family([(28, 28, 1)] * 5) == "small"
    assert tfrecords.sample_family([(32, 32, 3)] * 5) == "cifar"
    assert tfrecords.sample_family([(48, 56, 1), (300, 200, 3)]) == "imagenet"
    assert tfrecords.sample_family([(80, 80, 3)] * 3) == "imagenet"
    assert tfrecords.sample_family([(32, 32, 3)] * 3 + [(40, 36, 3)]) == "cifar"
    assert tfrecords.sample_family([(32, 32, 3)] * 2 + [(40, 36, 3)] * 2) == "imagenet"
    assert tfrecords.sample_family([]) == "imagenet"
    assert tfrecords.sample_channels([(48, 56, 1), (60, 60, 3)]) == 3
    assert tfrecords.sample_channels([(48, 56, 1), (60, 60, 2)]) == 1
    assert tfrecords.common_size([(32, 32, 3), (40, 40, 3), (32, 32, 1)]) == (32, 32)


def test_a_fixed_size_set_resizes_an_image_of_another_size(tmp_path):
    folder = str(tmp_path / "cifarish")
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(6)]
    odd = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
    items = [(_encoded("RGB", "PNG", p), 1 + i % 2, None) for i, p in enumerate(pixels)]
    layout.write_shard(os.path.join(folder, "train-00000-of-00001"), items)
    layout.write_shard(os.path.join(folder, "validation-00000-of-00001"),
                       items[:2] + [(_encoded("RGB", "PNG", odd), 1, None)])
    source = sources.load("tfrecord:" + folder)
    assert (source.family, source.input_shape) == ("cifar", (32, 32, 3))
    images, _, _ = source.eval_arrays()
    assert images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(images[:2], np.stack(pixels[:2]))  # kept as they are
    resized = tf.image.resize(odd, (32, 32), antialias=True).numpy()
    np.testing.assert_array_equal(images[2], np.clip(np.round(resized), 0, 255))


def test_dataset_info_sets_family_channels_and_shape(tmp_path):
    folder = str(tmp_path / "declared")
    layout.write_imagenet_layout(folder, num_classes=2, train_per_shard=2, validation=2)
    with open(os.path.join(folder, "dataset_info.json"), "w") as handle:
        json.dump({"family": "cifar", "channels": 1, "image_shape": [40, 40]}, handle)
    source = sources.load("tfrecord:" + folder)
    assert (source.family, source.input_shape) == ("cifar", (40, 40, 1))
    assert source.eval_arrays()[0].shape == (2, 40, 40, 1)


@pytest.mark.parametrize("info, message", [
    ({"channels": 4}, "says channels 4; allowed: 1 or 3"),
    ({"channels": True}, "says channels True; allowed: 1 or 3"),
    ({"image_shape": [40, "x"]}, "says image_shape [40, 'x']; allowed: [height, width] in "
                                 "pixels"),
    ({"family": "toy"}, "names the family 'toy'; allowed: small, cifar, imagenet"),
])
def test_dataset_info_values_outside_what_is_allowed(tmp_path, info, message):
    folder = str(tmp_path / "declared")
    layout.write_imagenet_layout(folder, num_classes=2, train_per_shard=1, validation=1)
    with open(os.path.join(folder, "dataset_info.json"), "w") as handle:
        json.dump(info, handle)
    with pytest.raises(sources.DataError, match="^dataset_info.json in '" + folder + "' "
                       + message.replace("[", r"\[").replace("]", r"\]") + "$"):
        sources.load("tfrecord:" + folder)


def _bad_image_folder(tmp_path, position):
    """Two classes; validation record `position` is a BMP header and bytes no decoder
    reads (the scan looks at headers only)."""
    folder = str(tmp_path / "broken")
    layout.write_imagenet_layout(folder, num_classes=2, train_per_shard=2, validation=0)
    rng = np.random.default_rng(2)
    items = [(layout.jpeg(rng, 1 + i % 2), 1 + i % 2, layout.TEXTS[i % 2])
             for i in range(position + 2)]
    items[position] = (b"BM" + b"\x00" * 200, 1, layout.TEXTS[0])
    layout.write_shard(os.path.join(folder, "validation-00000-of-00001"), items)
    return folder


def test_an_image_of_the_sample_that_does_not_decode_is_one_error(tmp_path):
    folder = _bad_image_folder(tmp_path, 1)
    path = os.path.join(folder, "validation-00000-of-00001")
    with pytest.raises(sources.DataError, match=f"^record 1 of '{path}': image/encoded does "
                                                "not decode: Number of channels"):
        sources.load("tfrecord:" + folder)


def test_data_that_does_not_read_fails_before_dataset_json(tmp_path):
    # Past the sample (its first records of each of the 3 files), in the first batch.
    position = -(-tfrecords.SAMPLE_RECORDS // 3) + 1
    folder = _bad_image_folder(tmp_path, position)
    workdir = str(tmp_path / "w")
    # In this process (the command line prints the same message as one error line, exit 2).
    with pytest.raises(sources.DataError) as raised:
        train.run(workdir=workdir, dataset=f"tfrecord:{folder}", model="mlp", width=4,
                  sparsities="0", seeds=1, epochs=1)
    assert str(raised.value) == (
        f"the first batch of 'tfrecord:{folder}' does not read (family imagenet, input "
        "(224, 224, 3)): Number of channels inherent in the image must be 1, 3 or 4, was 0")
    assert not os.path.exists(workdir)


def _full_record(encoded, label, index):
    """A record as ImageNet's build script writes it: filename, synset, a bounding box."""
    return layout.record(encoded, label, features=layout.imagenet_features(
        encoded, label, f"ILSVRC2012_val_{index:08d}.JPEG"))


def test_eval_records_lead_back_to_their_files_with_every_feature(tmp_path):
    folder = str(tmp_path / "full")
    os.makedirs(folder)
    rng = np.random.default_rng(3)
    written = {name: [_full_record(layout.jpeg(rng, 1 + i % 2), 1 + i % 2, 10 * shard + i)
                      for i in range(3)] for shard, name in enumerate(
                          ["validation-00000-of-00002", "validation-00001-of-00002"])}
    for name, items in written.items():
        with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
            for item in items:
                writer.write(item)
    layout.write_shard(os.path.join(folder, "train-00000-of-00001"),
                       [(layout.jpeg(rng, 1), 1, None), (layout.jpeg(rng, 2), 2, None)])
    source = sources.load("tfrecord:" + folder)
    records_read = list(source.eval_serialized().as_numpy_iterator())
    expected = [(name, index, record) for name, items in written.items()
                for index, record in enumerate(items)]
    assert [r["serialized"] for r in records_read] == [record for _, _, record in expected]
    assert [r["record_key"].decode() for r in records_read] == [
        f"{name}:{index}" for name, index, _ in expected]
    assert [r["filename"].decode() for r in records_read] == [
        f"ILSVRC2012_val_{10 * shard + i:08d}.JPEG" for shard in range(2) for i in range(3)]
    ids = [int(r["image_id"]) for r in records_read]
    assert ids == source.eval_arrays()[2].tolist() == list(range(6))
    # A subset's copy keeps every original feature and gains the image id.
    copy = tf.train.Example.FromString(tfrecords.with_features(records_read[4]["serialized"],
                                                               image_id=ids[4]))
    original = tf.train.Example.FromString(records_read[4]["serialized"])
    for name, feature in original.features.feature.items():
        assert copy.features.feature[name] == feature
    assert list(copy.features.feature["image_id"].int64_list.value) == [4]
