"""Test data in the ImageNet TFRecord layout, written by the tests themselves.

JPEGs of varying, non-square sizes up to 320 px; `image/class/label` 1..K with
`image/class/text`, and what ImageNet's build script also writes: `image/filename`,
`image/class/synset`, `image/height`, `image/width` and a bounding box; shards
`train-00000-of-00002`, `train-00001-of-00002` and `validation-00000-of-00001`.
Paths go through TensorFlow's file system, so the same writer fills a local folder
or a `ram://` one.
"""
import os

import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

TEXTS = ("tench", "goldfish", "great white shark", "tiger shark")
MAX_SIDE = 320
MIN_SIDE = 72


def jpeg(rng, label):
    """A non-square JPEG whose colour depends on its label (so a model can learn it)."""
    while True:
        height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
        if height != width:
            break
    base = np.zeros(3)
    base[label % 3] = 160.0
    noise = rng.normal(0, 40, size=(height, width, 3))
    ramp = np.linspace(0, 60, width)[None, :, None]
    image = np.clip(base + noise + ramp, 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=90).numpy()


def imagenet_features(encoded, label, filename):
    """The features besides image and label of a record of ImageNet's build script."""
    height, width = (int(d) for d in tf.io.extract_jpeg_shape(encoded)[:2])
    return {
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[filename.encode()])),
        "image/class/synset": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"n0%07d" % (1440764 + label)])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
        "image/object/bbox/xmin": tf.train.Feature(float_list=tf.train.FloatList(
            value=[0.1, 0.25])),
        "image/object/bbox/ymax": tf.train.Feature(float_list=tf.train.FloatList(
            value=[0.9, 0.75])),
        "image/object/bbox/label": tf.train.Feature(int64_list=tf.train.Int64List(
            value=[label, label])),
    }


def record(encoded, label, text=None, features=None, **extra):
    """A serialized record; `features` ({name: tf.train.Feature}) are added as they are."""
    feature = dict(features or {})
    feature.update({
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })
    if text is not None:
        feature["image/class/text"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[text.encode()]))
    for name, value in extra.items():
        feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path, items):
    with tf.io.TFRecordWriter(path) as writer:
        for item in items:
            writer.write(record(*item))


def write_imagenet_layout(folder, num_classes=3, train_per_shard=6, validation=9, seed=0):
    """Writes the layout; returns the validation (encoded JPEG, 1-based label) pairs."""
    rng = np.random.default_rng(seed)
    tf.io.gfile.makedirs(folder)

    def items(count, name):
        labels = [1 + i % num_classes for i in range(count)]
        images = [jpeg(rng, label) for label in labels]
        return [(encoded, label, TEXTS[label - 1],
                 imagenet_features(encoded, label, name(i, label)))
                for i, (encoded, label) in enumerate(zip(images, labels))]
    for shard in range(2):
        write_shard(os.path.join(folder, f"train-{shard:05d}-of-00002"), items(
            train_per_shard, lambda i, label: f"n0{1440764 + label:07d}_{shard}{i:04d}.JPEG"))
    evals = items(validation, lambda i, label: f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    write_shard(os.path.join(folder, "validation-00000-of-00001"), evals)
    return [(encoded, label) for encoded, label, _, _ in evals]
