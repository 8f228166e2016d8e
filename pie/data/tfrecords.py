"""TFRecord folders in the ImageNet layout, read through `tf.io.gfile` (local, gs://, ram://).

A folder holds shards `train-*` and `validation-*` (or `test-*`); a folder without
train shards (a PIE subset this toolkit writes) is all eval. Each record is a
tf.train.Example with

  image/encoded      the encoded image (JPEG, PNG, GIF or BMP), kept as it is
  image/class/label  int64 class label; ImageNet's are 1-based
  image/class/text   optional class name (one text per label)
  image_id           optional int64 id (the PIE subsets carry the eval image's id)

The family (small, cifar, imagenet) and the channel count come from the folder's
dataset_info.json (`family`, `channels`, `image_shape`) when it says, else from a
sample of images read across the shards (Folder.probe), never from one record;
every image is then decoded to that channel count whatever its encoding (decode).

Labels become the toolkit's 0-based class ids by subtracting the label offset:
`--label_offset=N` when given, else `label_offset` of the folder's
`dataset_info.json` (the PIE subsets this toolkit writes say their source's), else
1 (ImageNet).
Every file is scanned once (record count, labels, texts, image headers) and the
result kept in the size cache (pie.data.size_cache); bad files fail there, as one
error naming the file, before anything is trained or written.
"""
import json
import os

import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.data import size_cache, views
from pie.io import errors
import tensorflow as tf

INFO_NAME = "dataset_info.json"
IMAGENET_LABEL_OFFSET = 1
TRAIN_PREFIXES = ("train",)
EVAL_PREFIXES = ("validation", "test")
# Headers of the formats tf.io.decode_image reads.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
SCAN_BATCH = 1024
RECORD_FRAMING = 16  # bytes around each record: length, its CRC, the data's CRC
MAX_INTERLEAVE = 16
# Images decoded to decide the family and channels of a folder without dataset_info.json.
SAMPLE_RECORDS = 64
# A set of one fixed image size below this height keeps its pixels (cifar, small).
FIXED_SIZE_LIMIT = 64

SCAN_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
READ_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image_id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}

NAME_FEATURES = {
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image_id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def feature(value):
    """A tf.train.Feature of one value: text and bytes as bytes, booleans and
    integers as int64, anything else as float."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


def set_features(example, features):
    """Sets `features` ({name: value}) on a tf.train.Example, replacing any of those
    names; every other feature stays as it is."""
    for name, value in features.items():
        example.features.feature[name].CopyFrom(feature(value))
    return example


def serialized(example):
    """An Example's bytes with its features in key order, so the same features give
    the same bytes (a map's order is otherwise the runtime's choice)."""
    return example.SerializeToString(deterministic=True)


def with_features(record, **features):
    """A serialized tf.train.Example with every feature of `record` kept and the given
    ones set (e.g. image_id): how a subset copies a record whole."""
    return serialized(set_features(tf.train.Example.FromString(bytes(record)), features))


def is_data_file(name):
    return not (name.endswith((".json", ".tmp", "/")) or name.startswith(".")
                or ".json.tmp-" in name)


def list_files(folder):
    """(train files, eval files), sorted, through tf.io.gfile."""
    if not tf.io.gfile.isdir(folder):
        raise errors.DataError(f"no TFRecord folder at '{folder}'")
    names = sorted(name for name in tf.io.gfile.listdir(folder) if is_data_file(name))
    paths = [os.path.join(folder, name) for name in names
             if not tf.io.gfile.isdir(os.path.join(folder, name))]
    train = [p for p in paths if os.path.basename(p).startswith(TRAIN_PREFIXES)]
    evals = [p for p in paths if os.path.basename(p).startswith(EVAL_PREFIXES)]
    if not evals:
        # A folder of one subset (as the PIE stage writes): everything is eval.
        evals = [p for p in paths if p not in train]
    if not evals:
        raise errors.DataError(f"no TFRecord files in '{folder}'")
    return train, evals


def read_info(folder):
    path = os.path.join(folder, INFO_NAME)
    if not tf.io.gfile.exists(path):
        return {}
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            info = json.load(f)
    except ValueError as error:
        raise errors.DataError(f"'{path}' is not valid JSON: {error}")
    if not isinstance(info, dict):
        raise errors.DataError(f"'{path}' must hold a JSON object")
    return info


def scan_file(path):
    """Record count, {label: text} and the first record's format of one file."""
    def facts(serialized):
        parsed = tf.io.parse_example(serialized, SCAN_FEATURES)
        return {"label": parsed["image/class/label"], "text": parsed["image/class/text"],
                "magic": tf.strings.substr(parsed["image/encoded"], 0, 4),
                "bytes": tf.strings.length(serialized)}
    dataset = tf.data.TFRecordDataset(path).batch(SCAN_BATCH).map(facts)
    count, texts, framed = 0, {}, 0
    try:
        for batch in dataset.as_numpy_iterator():
            # Each record is framed by a 12-byte header and a 4-byte checksum.
            framed += int(batch["bytes"].sum()) + RECORD_FRAMING * len(batch["bytes"])
            for offset, magic in enumerate(batch["magic"]):
                if not magic.startswith(IMAGE_MAGIC):
                    raise errors.DataError(
                        f"record {count + offset} of '{path}': image/encoded is not an image "
                        "(JPEG, PNG, GIF or BMP)")
            for label, text in zip(batch["label"].tolist(), batch["text"].tolist()):
                text = text.decode("utf-8", "replace")
                known = texts.setdefault(str(label), text)
                if known != text:
                    if known and text:
                        raise errors.DataError(
                            f"'{path}': label {label} has two class texts, '{known}' and "
                            f"'{text}'")
                    texts[str(label)] = known or text
            count += len(batch["label"])
    except tf.errors.DataLossError as error:
        raise errors.DataError(f"corrupt TFRecord file '{path}': {errors.first_line(error)}")
    except tf.errors.InvalidArgumentError as error:
        raise errors.DataError(f"'{path}' is not in the ImageNet TFRecord layout "
                               f"(image/encoded, image/class/label): {errors.first_line(error)}")
    size = tf.io.gfile.stat(path).length
    if size != framed:
        # TensorFlow reads a file cut inside a record's header as one that ends there.
        raise errors.DataError(f"corrupt TFRecord file '{path}': {size - framed} bytes after "
                               f"its {count} whole records (a truncated copy?)")
    return {"records": count, "texts": texts}


class Folder:
    """One scanned TFRecord folder: files, sizes, classes and how to read it."""

    def __init__(self, folder, label_offset=None, workdir=None):
        self.folder = folder
        self.train_files, self.eval_files = list_files(folder)
        self.info = read_info(folder)
        if label_offset is None:
            label_offset = self.info.get("label_offset", IMAGENET_LABEL_OFFSET)
        self.label_offset = int(label_offset)
        cache = size_cache.SizeCache(folder, workdir)
        self.facts = {}
        for path in self.train_files + self.eval_files:
            stamp = size_cache.file_stamp(path)
            facts = cache.get(path, stamp)
            if facts is None:
                facts = scan_file(path)
                cache.put(path, stamp, facts)
            self.facts[path] = dict(facts, bytes=stamp["bytes"])
        self.train_size = sum(self.facts[p]["records"] for p in self.train_files)
        self.eval_size = sum(self.facts[p]["records"] for p in self.eval_files)
        written = self.info.get("num_examples")
        if not self.train_files and isinstance(written, int) and written != self.eval_size:
            # A file cut between two records reads as a whole, shorter one.
            raise errors.DataError(
                f"'{self.folder}' holds {self.eval_size} records, its {INFO_NAME} says "
                f"{written}: a shard is truncated or missing")
        self.cache_path = cache.save()
        self._classes()

    def _classes(self):
        """num_classes, class_names; every label checked against them."""
        raw = {}
        for path, facts in self.facts.items():
            for label, text in facts["texts"].items():
                known = raw.setdefault(int(label), (text, path))
                if text and known[0] and known[0] != text:
                    raise errors.DataError(
                        f"'{path}': label {label} has the class text '{text}', but "
                        f"'{known[1]}' names it '{known[0]}'")
                if text and not known[0]:
                    raw[int(label)] = (text, path)
        if "num_classes" in self.info:
            self.num_classes = int(self.info["num_classes"])
        elif raw:
            self.num_classes = max(raw) - self.label_offset + 1
        else:
            raise errors.DataError(f"the TFRecord files in '{self.folder}' are empty and "
                                   f"it has no {INFO_NAME} with num_classes")
        for label, (_, path) in sorted(raw.items()):
            class_id = label - self.label_offset
            if not 0 <= class_id < self.num_classes:
                raise errors.DataError(
                    f"label {label} in '{path}' is outside the {self.num_classes} classes: "
                    f"with label offset {self.label_offset} it is class {class_id}, not in "
                    f"0..{self.num_classes - 1} (set --label_offset to the labels' first "
                    "class: 1 for ImageNet, 0 for 0-based labels)")
        names = list(self.info.get("class_names") or [str(c) for c in range(self.num_classes)])
        if len(names) != self.num_classes:
            raise errors.DataError(f"{INFO_NAME} in '{self.folder}' has {len(names)} class "
                                   f"names for {self.num_classes} classes")
        for label, (text, _) in raw.items():
            if text:
                names[label - self.label_offset] = text
        self.class_names = tuple(names)

    def mean_record_bytes(self, files):
        records = sum(self.facts[p]["records"] for p in files)
        return sum(self.facts[p]["bytes"] for p in files) / max(records, 1)

    def sample_shapes(self, count=SAMPLE_RECORDS):
        """(height, width, channels as encoded) of up to `count` images read across the
        shards: the first records of evenly spaced files, eval and train."""
        files = [p for p in self.eval_files + self.train_files if self.facts[p]["records"]]
        if not files:
            return []
        picked = [files[i] for i in
                  sorted(set(np.linspace(0, len(files) - 1, min(len(files), count)).astype(int)))]
        per_file = max(1, -(-count // len(picked)))
        shapes = []
        for path in picked:
            for index, serialized in enumerate(tf.data.TFRecordDataset(path).take(per_file)):
                encoded = tf.io.parse_single_example(serialized, READ_FEATURES)["image/encoded"]
                try:
                    shapes.append(tuple(int(d) for d in decode(encoded, 0).shape))
                except tf.errors.OpError as error:
                    raise errors.DataError(f"record {index} of '{path}': image/encoded does "
                                           f"not decode: {errors.first_line(error)}")
        return shapes

    def probe(self):
        """(family or None, channels, image shape or None) of the data as a whole: what
        dataset_info.json says, the rest decided from a sample of images across the
        shards (sample_family, sample_channels), never from one record."""
        info = self.info
        check_info_shape(info, self.folder)
        need_sample = "channels" not in info or "family" not in info or (
            "image_shape" not in info and info.get("family") != "imagenet")
        shapes = self.sample_shapes() if need_sample else []
        channels = info["channels"] if "channels" in info else sample_channels(shapes)
        family = info.get("family") or sample_family(shapes)
        shape = info.get("image_shape") or common_size(shapes)
        if shape is not None:
            shape = tuple(int(d) for d in tuple(shape)[:2]) + (channels,)
        return family, channels, shape

    # ------------------------------------------------------------------ pipelines

    @views.no_autograph
    def parse(self, serialized, channels):
        parsed = tf.io.parse_single_example(serialized, READ_FEATURES)
        return {"encoded": parsed["image/encoded"],
                "label": parsed["image/class/label"] - self.label_offset,
                "image_id": parsed["image_id"]}

    def eval_encoded(self, channels):
        """Encoded eval records in a fixed order; records without image_id get their position."""
        return tf.data.TFRecordDataset(self.eval_files).map(
            lambda s: self.parse(s, channels)).enumerate().map(
            lambda i, ex: dict(ex, image_id=tf.where(ex["image_id"] >= 0, ex["image_id"], i)))

    def eval_serialized(self):
        """Every eval record as it is stored, each feature kept (filename, synset,
        bounding boxes, any other), in eval_encoded's order: dicts of `serialized`,
        `image_id` and `label` (as eval_encoded gives them), `record_key` (shard file
        and record index, "validation-00000-of-00001:17") and `filename` (the
        record's image/filename, or "" without one): what leads a subset back to the
        files."""
        def read(path):
            name = os.path.basename(path)
            return tf.data.TFRecordDataset(path).enumerate().map(
                lambda index, serialized: {
                    "serialized": serialized,
                    "record_key": tf.strings.join([name, tf.strings.as_string(index)], ":")})
        files = [read(path) for path in self.eval_files]
        dataset = files[0]
        for more in files[1:]:
            dataset = dataset.concatenate(more)

        def named(position, example):
            parsed = tf.io.parse_single_example(example["serialized"], NAME_FEATURES)
            image_id = tf.where(parsed["image_id"] >= 0, parsed["image_id"], position)
            return dict(example, image_id=image_id, filename=parsed["image/filename"],
                        label=parsed["image/class/label"] - self.label_offset)
        return dataset.enumerate().map(named)

    def train_encoded(self, seed, epoch, shuffle_bytes):
        """Encoded training records: files in a (seed, epoch) order, read interleaved,
        shuffled in a buffer bounded in bytes; `key` = file index * 2^32 + record."""
        if not self.train_files:
            raise errors.DataError(f"'{self.folder}' has no train-* files to train on")
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(self.train_files))
        files = tf.constant([self.train_files[i] for i in order])
        indices = tf.constant(order, tf.int64)

        def read(path, index):
            return tf.data.TFRecordDataset(path).enumerate().map(
                lambda record, serialized: (index * 2 ** 32 + record, serialized))
        dataset = tf.data.Dataset.from_tensor_slices((files, indices)).interleave(
            read, cycle_length=min(len(self.train_files), MAX_INTERLEAVE),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        buffer = shuffle_buffer(self.train_size, self.mean_record_bytes(self.train_files),
                                shuffle_bytes)
        dataset = dataset.shuffle(buffer, seed=int(seed) * 100003 + int(epoch),
                                  reshuffle_each_iteration=False)
        return dataset.map(lambda key, serialized: dict(self.parse(serialized, 0), key=key),
                           num_parallel_calls=tf.data.AUTOTUNE)


def shuffle_buffer(size, mean_bytes, budget):
    """Examples a shuffle buffer of `budget` bytes holds (at least 1, at most the split)."""
    return int(max(1, min(max(size, 1), budget // max(int(mean_bytes), 1))))


def check_info_shape(info, folder):
    """dataset_info.json's `channels` (1 or 3) and `image_shape` ([height, width],
    positive integers) as allowed, or one DataError naming the key."""
    channels = info.get("channels", 3)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise errors.DataError(f"{INFO_NAME} in '{folder}' says channels {channels!r}; "
                               "allowed: 1 or 3")
    shape = info.get("image_shape")
    if shape is not None and not (
            isinstance(shape, list) and len(shape) in (2, 3)
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise errors.DataError(f"{INFO_NAME} in '{folder}' says image_shape {shape!r}; "
                               "allowed: [height, width] in pixels")


def sample_channels(shapes):
    """3 when any sampled image has colour (RGB, RGBA, CMYK, a palette), 1 when every
    one is grey (with or without alpha); 3 without a sample."""
    if shapes and all(shape[-1] in (1, 2) for shape in shapes):
        return 1
    return 3


def common_size(shapes):
    """The (height, width) of most sampled images, or None without a sample."""
    if not shapes:
        return None
    sizes = [shape[:2] for shape in shapes]
    return max(sorted(set(sizes)), key=sizes.count)


def sample_family(shapes):
    """The family of a sample of image shapes: a set where most images have one size
    under 64 px is `cifar` (from 32 px high) or `small`, and resizes the others to it;
    any other set (sizes that vary, large images, no sample) is `imagenet`, whose
    transform resizes every image to the model's input."""
    size = common_size(shapes)
    if size is not None and 2 * sum(shape[:2] == size for shape in shapes) > len(shapes):
        if size[0] < FIXED_SIZE_LIMIT:
            return "cifar" if size[0] >= 32 else "small"
    return "imagenet"


@views.no_autograph
def decode(encoded, channels):
    """An encoded image to uint8 HxWxC (first frame of a GIF), whatever its own encoding:
    channels=1 turns colour (a CMYK JPEG included, which libjpeg cannot turn grey
    itself) to grey, channels=3 repeats a grey image's channel; 0 keeps its own."""
    if channels != 1:
        return tf.io.decode_image(encoded, channels=channels, expand_animations=False)

    def four_components():
        return tf.equal(tf.io.extract_jpeg_shape(encoded)[-1], 4)
    cmyk = tf.cond(tf.io.is_jpeg(encoded), four_components, lambda: tf.constant(False))
    return tf.cond(
        cmyk,
        lambda: tf.image.rgb_to_grayscale(
            tf.io.decode_image(encoded, channels=3, expand_animations=False)),
        lambda: tf.io.decode_image(encoded, channels=1, expand_animations=False))
