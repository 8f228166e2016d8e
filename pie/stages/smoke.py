"""`--smoke`: a study's every stage on a miniature of its data, on a CPU.

  python -m pie.stages.study --flagfile=configs/hooker_cifar10_wrn.cfg --smoke --workdir=W

The config's recipe is kept: dataset (as miniature data), model family, method, protocol
and prune schedule, --extra_methods, optimizer, learning-rate schedule kind, weight
decay, label smoothing, precision, augmentation, quantization modes, subgroups. What
shrinks (`shrink`, one printed line says what changed):

  data         tensorflow-datasets names: mock data with the dataset's real features
               (tfds's RandomFakeGenerator: random pixels, a few images per class),
               written as a prepared tfds folder W/smoke_data/tfds (--data_dir), so each
               stage reads it as it reads the real set; ImageNet-size sets without
               attributes (imagenet2012): a generated folder in the ImageNet TFRecord
               layout, 32-px JPEGs of 4 classes (--dataset=tfrecord:W/smoke_data/NAME),
               so the model runs at 32 px, not 224; local sets (mnist5k, digits, toy,
               tfrecord: folders) are kept. Nothing is downloaded.
  population   2 seeds; the levels 0 and the median given level (an iterative cascade:
               and the largest, so that one step prunes the previous one's network)
  training     3 epochs of a few steps (batch 4): a warm-up of 1 epoch when the recipe
               has one, one decay step after epoch 2 for --lr_schedule=step; an explicit
               pruning schedule (--begin_step, --end_step, --frequency) is compressed to
               the same fractions of the shorter training; --strategy=default, no --tpu,
               one training process (--workers=1)
  model        the width knob of the wide models (resnet18: 8, resnet50: 16, wrn28_k:
               2); resnet50 also runs at the fixture's 32 px
  later stages 2 corruptions at one severity; 8 images of noise similarity and
               informative features; 1 noise draw, 1 cost repeat and no cost warm-up calls,
               1 toy seed.
"""
import contextlib
import io
import os
import shutil

from absl import flags

from pie.io import cli
from pie.io.workdir import Workdir

SEEDS = 2
EPOCHS = 3
WARMUP_EPOCHS = 1
DECAY_EPOCHS = "2"
BATCH_SIZE = 4
IMAGES_PER_CLASS = 2  # a split of the mock tfds data: this many images of each class
MIN_SPLIT_IMAGES = 16
FIXTURE_CLASSES = 4
FIXTURE_IMAGES_PER_CLASS = 4
FIXTURE_SIDE = 32
# (wrn28_k: 2, so that distillation's default student, half the width, is smaller;
# resnet50: 16, since at 8 a 1,024-weight layer pruned under mixed_bfloat16 ended 0.59
# points short of 0.5, which the measured-sparsity check refuses.)
SMALL_WIDTH = {"resnet18": 8, "resnet50": 16, "wrn28_k": 2}
ANALYSIS_IMAGES = 8
# Below this height a tfds set's images are kept at their size (CIFAR-like); at or above
# it they are ImageNet-size and the model would run at 224 px (pie.data.tfrecords).
IMAGENET_SIZE = 64
COMPLETE_MARK = ".complete"


def _sparsities(text, iterative):
    """0 and the median given level; an iterative cascade also keeps the largest (so one
    step prunes the previous step's network)."""
    levels = [level.strip() for level in text.split(",") if level.strip()]
    pruned = sorted({level for level in levels if float(level) > 0}, key=float)
    if not pruned:
        return "0"
    chosen = [pruned[(len(pruned) - 1) // 2]] + ([pruned[-1]] if iterative else [])
    return ",".join(["0"] + list(dict.fromkeys(chosen)))


def _severity(text):
    from robustness_tests import corruptions
    severities = corruptions.parse_severities(text)
    return str(severities[(len(severities) - 1) // 2])


def _corruptions(text):
    from robustness_tests import corruptions
    names = corruptions.parse_corruptions(text)
    return ",".join(dict.fromkeys([names[0], names[-1]]))


def _pruning_steps(settings, total_steps):
    """The explicit pruning schedule at the same fractions of `total_steps` training steps
    (the original training: --steps_per_epoch x --epochs; the defaults (-1) are already
    fractions of training)."""
    if settings.begin_step < 0 and settings.end_step < 0 and settings.frequency < 0:
        return {}
    if not (settings.steps_per_epoch and settings.epochs):
        raise cli.UsageError("--smoke compresses --begin_step/--end_step/--frequency only "
                             "with --steps_per_epoch and --epochs given (the original "
                             "training's length)")
    original = settings.steps_per_epoch * settings.epochs
    begin = max(0, round(settings.begin_step / original * total_steps))
    end = max(begin + 2, round(settings.end_step / original * total_steps))
    return {"begin_step": str(begin), "end_step": str(min(end, total_steps)),
            "frequency": "1"}


def data_plan(settings):
    """(kind, description) of the smoke data: 'tfds' (mock data with the dataset's real
    features, a prepared tfds folder), 'fixture' (ImageNet TFRecord layout) or 'local'."""
    from pie.data import sources
    name = settings.dataset
    if name in sources.EMBEDDED or name in sources.TOY or name.startswith(
            sources.TFRECORD_PREFIX):
        return "local", f"{name} as given (local data)"
    features = _tfds_features(name)
    shape = features["image"].shape if "image" in features else (None,)
    if "attributes" not in features and (shape[0] is None or shape[0] >= IMAGENET_SIZE):
        return "fixture", (f"a generated ImageNet-layout TFRecord folder in place of {name} "
                           f"({FIXTURE_CLASSES} classes x {FIXTURE_IMAGES_PER_CLASS} "
                           f"{FIXTURE_SIDE}-px JPEGs a split; the model runs at "
                           f"{FIXTURE_SIDE} px)")
    return "tfds", (f"mock tensorflow-datasets {name} (its real features, random pixels, "
                    f"{_split_size(features)} images a split)")


def _tfds_features(name):
    from pie.data import sources
    return sources.tfds_builder(name).info.features


def _split_size(features):
    classes = features["label"].num_classes if "label" in features else 2
    return max(MIN_SPLIT_IMAGES, classes * IMAGES_PER_CLASS)


def shrink(settings):
    """(smoke settings, the line saying what changed): the same recipe, miniature."""
    workdir = Workdir(settings.workdir)
    kind, data = data_plan(settings)
    changes = {}
    if kind == "tfds":
        changes["data_dir"] = os.path.join(workdir.smoke_data_dir, "tfds")
    elif kind == "fixture":
        changes["dataset"] = "tfrecord:" + os.path.join(workdir.smoke_data_dir,
                                                        settings.dataset.split(":")[0])
        changes["data_dir"] = ""
    changes["seeds"] = str(min(settings.seeds, SEEDS))
    changes["sparsities"] = _sparsities(settings.sparsities,
                                        settings.prune_schedule == "iterative")
    if settings.epochs is not None:
        changes["epochs"] = str(EPOCHS)
    if settings.finetune_epochs and settings.finetune_epochs > EPOCHS:
        changes["finetune_epochs"] = str(EPOCHS)
    # Local data keeps its batch (a few thousand images at most); the miniature data
    # gets batches of BATCH_SIZE, a few steps an epoch.
    steps_per_epoch = 1
    if kind != "local":
        changes["batch_size"] = str(BATCH_SIZE)
        images = (FIXTURE_CLASSES * FIXTURE_IMAGES_PER_CLASS if kind == "fixture"
                  else _split_size(_tfds_features(settings.dataset)))
        steps_per_epoch = images // BATCH_SIZE
    if settings.steps_per_epoch:
        changes["steps_per_epoch"] = str(steps_per_epoch)
    changes.update(_pruning_steps(settings, EPOCHS * steps_per_epoch))
    if settings.warmup_epochs > 0:
        changes["warmup_epochs"] = str(WARMUP_EPOCHS)
    if settings.lr_schedule == "step":
        changes["lr_decay_epochs"] = DECAY_EPOCHS
    # One training process: a second one's TensorFlow start and model tracing cost more
    # CPU time than the few steps it would take over.
    if settings.workers != 1:
        changes["workers"] = "1"
    if settings.strategy != "default":
        changes["strategy"] = "default"
        changes["tpu"] = ""
    if settings.model in SMALL_WIDTH and (settings.width is None
                                          or settings.width > SMALL_WIDTH[settings.model]):
        changes["width"] = str(SMALL_WIDTH[settings.model])
    changes["corruptions"] = _corruptions(settings.corruptions)
    changes["severities"] = _severity(settings.severities)
    changes["noise_draws"] = "1"
    changes["noise_images"] = str(min(settings.noise_images, ANALYSIS_IMAGES))
    changes["informative_images"] = str(min(settings.informative_images, ANALYSIS_IMAGES))
    changes["cost_repeats"] = "1"
    # Untimed interpreter calls before the one timed: at batch 32 each is a second or
    # more of a wide model on a CPU, and a smoke run's latency means nothing.
    changes["cost_warmup"] = "0"
    changes["toy_seeds"] = "1"
    changes["toy_samples_per_class"] = settings.toy_samples_per_class.split(",")[0]
    smoke = _replaced(settings, changes)
    shown = [f"{name} {settings.serialized(name).split('=', 1)[-1] or '-'}->"
             f"{smoke.serialized(name).split('=', 1)[-1] or '-'}"
             for name in sorted(changes) if name != "dataset"
             and settings.serialized(name) != smoke.serialized(name)]
    line = f"smoke: data: {data}; " + ", ".join(shown)
    return smoke, line


def _replaced(settings, changes):
    """`settings` with flags changed as the command line would give them ({name: text};
    '' unsets a flag): values, serialized forms and flags_text all agree."""
    from pie.stages import study
    values = flags.FlagValues()
    study.define_flags(values)
    merged = settings.as_dict()
    serialized = {name: settings.serialized(name) for name in merged}
    for name, text in changes.items():
        flag = values[name]
        if text == "":
            flag.value = None
        else:
            flag.parse(text)
        merged[name] = flag.value
        serialized[name] = flag.serialize()
    present = [name for name in merged if settings.present(name) or name in changes]
    flags_text = "\n".join(serialized[name] for name in sorted(serialized)
                           if serialized[name]) + "\n"
    return cli.Settings(merged, present, flags_text, serialized)


# ----------------------------------------------------------------------- the data


def write_data(settings):
    """Writes the smoke data of `settings` (already shrunk) once; a rerun reuses it."""
    workdir = Workdir(settings.workdir)
    if os.path.islink(workdir.smoke_data_dir):  # a hostile workdir's link is not followed
        raise cli.UsageError(f"'{workdir.smoke_data_dir}' is a symbolic link; --smoke "
                             "writes its miniature data there itself: remove it")
    if settings.dataset.startswith("tfrecord:" + workdir.smoke_data_dir):
        folder = settings.dataset[len("tfrecord:"):]
        _once(folder, lambda tmp: write_imagenet_layout(tmp))
    elif settings.data_dir and settings.data_dir.startswith(workdir.smoke_data_dir):
        folder = settings.data_dir
        _once(folder, lambda tmp: write_mock_tfds(settings.dataset, tmp))


def _once(folder, write):
    """Writes `folder` through a temporary sibling, renamed when complete: a killed
    smoke run leaves no half-written data that a rerun would read."""
    if os.path.exists(os.path.join(folder, COMPLETE_MARK)):
        return
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    temporary = folder + ".tmp"
    for stale in (temporary, folder):
        if os.path.lexists(stale):
            if os.path.islink(stale) or not os.path.isdir(stale):
                raise cli.UsageError(f"'{stale}' is not a folder pie wrote; remove it")
            shutil.rmtree(stale)
    write(temporary)
    open(os.path.join(temporary, COMPLETE_MARK), "w").close()
    os.rename(temporary, folder)


def write_mock_tfds(name, data_dir):
    """A prepared tfds folder of `name`: its builder's real features, random examples
    (tfds's own RandomFakeGenerator), labels spread over every class, files and
    dataset_info.json where tfds.load(name, data_dir=data_dir) reads them."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking
    from pie.data import sources
    builder = sources.tfds_builder(name, data_dir=data_dir)
    features = builder.info.features
    folder = builder.data_dir
    os.makedirs(folder)
    count = _split_size(features)
    base = name.split(":")[0].split("/")[0]
    splits = ("train", "test", "validation") if "attributes" in features else (
        "train", sources.TFDS_EVAL_SPLIT.get(base, "test"))
    for index, split in enumerate(splits):
        fake = mocking.RandomFakeGenerator(features, count, seed=index,
                                           constant_dynamic_shape=True)
        path = os.path.join(folder, f"{base}-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(path) as writer:
            for position, example in enumerate(fake):
                if "label" in example:  # every class, a few images each
                    example["label"] = np.int64(position % features["label"].num_classes)
                if "attributes" in example:  # both values of every attribute
                    for number, attribute in enumerate(sorted(example["attributes"])):
                        example["attributes"][attribute] = bool((position >> (number % 3)) & 1)
                writer.write(features.serialize_example(example))
    with sources.quiet_tfds(), contextlib.redirect_stdout(io.StringIO()):
        tfds.folder_dataset.write_metadata(data_dir=folder, features=features,
                                           check_data=False)


def write_imagenet_layout(folder):
    """ImageNet's TFRecord layout (`image/encoded` JPEG, `image/class/label` 1..K,
    `image/class/text`; shards train-* and validation-*), FIXTURE_SIDE-px images whose
    colour follows the class, so the model has something to learn."""
    import numpy as np
    import tensorflow as tf
    os.makedirs(folder)
    rng = np.random.default_rng(0)

    def example(label):
        base = np.zeros(3)
        base[label % 3] = 80.0 + 40.0 * (label // 3)
        pixels = np.clip(base + rng.normal(0, 40, size=(FIXTURE_SIDE, FIXTURE_SIDE, 3)),
                         0, 255).astype(np.uint8)
        feature = {
            "image/encoded": _bytes(tf.io.encode_jpeg(pixels, quality=90).numpy()),
            "image/format": _bytes(b"jpeg"),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                value=[label + 1])),
            "image/class/text": _bytes(f"class_{label}".encode()),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature))

    for split in ("train", "validation"):
        with tf.io.TFRecordWriter(os.path.join(folder, f"{split}-00000-of-00001")) as writer:
            for position in range(FIXTURE_CLASSES * FIXTURE_IMAGES_PER_CLASS):
                writer.write(example(position % FIXTURE_CLASSES).SerializeToString())


def _bytes(value):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
