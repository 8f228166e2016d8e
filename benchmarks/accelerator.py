r"""Training images/s of the study's ResNet-50 on this machine's accelerator (or CPU):
pie's training step, dense and magnitude-pruned at 0.9, beside a plain Keras
`model.fit` of the same model, precision and batch, in one run.

  .venv/bin/python benchmarks/accelerator.py [--config=configs/hooker_imagenet_resnet50.cfg] \
      [--precision=mixed_float16] [--jit_compile] [--batch_size=256] [--steps=50] \
      [--image_size=224]
  # CPU smoke test: --image_size=32 --batch_size=4 --steps=3 (ResNet-50 on 2 cores:
  # about 80 CPU-seconds, mostly building and tracing); the suite runs the same code
  # with --model=small_cnn --width=2 --image_size=8 --num_classes=10 to stay fast.

Data: one batch of synthetic images (uniform noise, normalised like ImageNet) and
random labels of 1,000 classes, held on the device and repeated, so the input
pipeline costs nothing and each step is the model's training step alone.

Three trainings, each a fresh build of `resnet50` (pie.models.builders) under the
chosen precision policy, each `fit` for 2 epochs of --steps steps; the second
epoch is timed (the first traces and compiles):
- plain: Keras as a user would write it: `SGD(learning_rate, momentum 0.9,
  nesterov)` (Adam if the config says adam) at a constant rate, `compile(loss=
  SparseCategoricalCrossentropy(from_logits=True))` with Keras's defaults, `fit`.
- pie dense: the training stage's recipe from --config: its optimizer, learning-rate
  schedule, weight decay and lr_per_256 (pie.compress.schedules.build_optimizer,
  a LossScaleOptimizer under float16), its per-example cross-entropy with the
  config's label smoothing, a whole epoch per traced call (steps_per_execution,
  the stage's default), and its history.csv callback.
- pie pruned: the same with tfmot's pruning wrappers on every conv layer at a
  constant 0.9 sparsity from step 0, masks updated every --prune_frequency steps
  (default: the config's --frequency), and tfmot's UpdatePruningStep callback.

Prints the device, the settings, images/s of each, and last `pruned_over_plain=`.
"""
import math
import os
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

flags.DEFINE_string("config", os.path.join(ROOT, "configs", "hooker_imagenet_resnet50.cfg"),
                    "The config whose recipe pie's trainings use (its --flag=value lines).")
flags.DEFINE_string("precision", None, "float32, mixed_float16 or mixed_bfloat16 "
                    "(default: the config's, else float32).")
flags.DEFINE_bool("jit_compile", None, "XLA (default: the config's, else off).")
flags.DEFINE_integer("batch_size", 256, "Batch size of every training (on one device).")
flags.DEFINE_integer("steps", 50, "Timed steps (the second of two epochs of this many).")
flags.DEFINE_integer("image_size", 224, "Image side in pixels.")
flags.DEFINE_integer("num_classes", 1000, "Classes.")
flags.DEFINE_string("model", "resnet50", "A model of pie.models.builders (the study's "
                    "resnet50; the suite's smoke test uses a small one to stay fast).")
flags.DEFINE_integer("width", None, "The model's width knob, if it has one.")
flags.DEFINE_integer("prune_frequency", None, "Steps between mask updates of the pruned "
                     "training (default: the config's --frequency, else 500).")
flags.DEFINE_float("sparsity", 0.9, "Target sparsity of the pruned training.")
FLAGS = flags.FLAGS

RECIPE_FLAGS = {"optimizer": "sgd", "learning_rate": "0.1", "lr_schedule": "constant",
                "warmup_epochs": "0", "lr_decay_epochs": "", "lr_decay_factor": "0.1",
                "weight_decay": "0", "weight_decay_mode": "l2", "lr_per_256": "false",
                "label_smoothing": "0", "precision": "float32", "jit_compile": "false",
                "frequency": "500", "steps_per_epoch": None, "epochs": "1"}


def read_config(path):
    """The recipe flags of a config file (`--name=value` lines; `--name` / `--noname`
    for booleans), with RECIPE_FLAGS' defaults for those it does not give."""
    values = dict(RECIPE_FLAGS)
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line.startswith("--"):
                continue
            name, _, value = line[2:].partition("=")
            if not _:
                value = "false" if name.startswith("no") else "true"
                name = name[2:] if name.startswith("no") else name
            if name in values:
                values[name] = value
    return values


def _true(text):
    return str(text).lower() in ("1", "true", "yes")


def device_name():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)} visible, 1 used)"
    tpus = tf.config.list_logical_devices("TPU")
    if tpus:
        return f"TPU: {len(tpus)} cores visible (not used: this benchmark runs on one device)"
    import platform
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def synthetic_data(batch_size, image_size, num_classes):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(0)
    images = rng.uniform(-2.0, 2.0, (batch_size, image_size, image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch_size,)).astype(np.int64)
    return tf.data.Dataset.from_tensors((images, labels)).cache().repeat()


class EpochTimes:
    """Seconds of each epoch of a `fit` (a Keras callback made lazily)."""

    def __new__(cls):
        import tf_keras as keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.start)
        return Timer()


def images_per_second(model, data, callbacks, steps, batch_size):
    timer = EpochTimes()
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=callbacks + [timer])
    return steps * batch_size / timer.seconds[-1]


def build_model():
    from pie.models import builders
    return builders.build(FLAGS.model, (FLAGS.image_size,) * 2 + (3,), FLAGS.num_classes,
                          width=FLAGS.width)


def plain_keras(recipe, data):
    import tf_keras as keras
    keras.utils.set_random_seed(0)
    model = build_model()
    rate = float(recipe["learning_rate"])
    optimizer = (keras.optimizers.Adam(rate) if recipe["optimizer"] == "adam"
                 else keras.optimizers.SGD(rate, momentum=0.9, nesterov=True))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  **({"jit_compile": True} if _true(recipe["jit_compile"]) else {}))
    return images_per_second(model, data, [], FLAGS.steps, FLAGS.batch_size)


def pie_training(recipe, data, pruned, history_dir):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    from pie.compress import history, precision, pruning, schedules
    keras.utils.set_random_seed(0)
    model = build_model()
    callbacks = [history.HistoryCSV(os.path.join(history_dir, f"history_{pruned}.csv"))]
    if pruned:
        frequency = FLAGS.prune_frequency or int(recipe["frequency"])
        schedule = pruning.make_schedule("constant", FLAGS.sparsity, begin_step=0,
                                         end_step=-1, frequency=max(1, frequency))
        model = pruning.wrap_for_pruning(model, schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    settings = schedules.validate(recipe["lr_schedule"], float(recipe["warmup_epochs"]),
                                  recipe["lr_decay_epochs"], float(recipe["lr_decay_factor"]),
                                  float(recipe["weight_decay"]), recipe["weight_decay_mode"],
                                  _true(recipe["lr_per_256"]))
    steps_per_epoch = int(recipe["steps_per_epoch"] or FLAGS.steps)
    optimizer = schedules.build_optimizer(
        recipe["optimizer"], float(recipe["learning_rate"]), settings,
        steps_per_epoch=steps_per_epoch, epochs=int(recipe["epochs"]),
        batch_size=FLAGS.batch_size, loss_scale=precision.needs_loss_scale(recipe["precision"]))
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=float(recipe["label_smoothing"]),
        reduction=keras.losses.Reduction.NONE)

    def sparse_loss(labels, logits):  # as the training stage computes it
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), FLAGS.num_classes)
        return loss(onehot, logits)
    model.compile(optimizer=optimizer, loss=sparse_loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
                  steps_per_execution=FLAGS.steps,
                  **precision.compile_options(_true(recipe["jit_compile"])))
    return images_per_second(model, data, callbacks, FLAGS.steps, FLAGS.batch_size)


def main(argv):
    del argv
    for name in ("batch_size", "steps", "image_size", "num_classes"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be at least 1, got {FLAGS[name].value}")
    recipe = read_config(FLAGS.config)
    if FLAGS.precision is not None:
        recipe["precision"] = FLAGS.precision
    if FLAGS.jit_compile is not None:
        recipe["jit_compile"] = str(FLAGS.jit_compile)
    import tensorflow as tf
    from pie.compress import precision
    precision.set_policy(recipe["precision"])
    print(f"device: {device_name()}", flush=True)
    print(f"{FLAGS.model} at {FLAGS.image_size} px, {FLAGS.num_classes} classes, batch "
          f"{FLAGS.batch_size}, {FLAGS.steps} timed steps after {FLAGS.steps} untimed, "
          f"precision {recipe['precision']}, jit_compile {_true(recipe['jit_compile'])}; "
          f"recipe of {os.path.relpath(FLAGS.config, ROOT)}: {recipe['optimizer']} "
          f"lr {recipe['learning_rate']}{' per 256' if _true(recipe['lr_per_256']) else ''}, "
          f"{recipe['lr_schedule']} schedule, weight decay {recipe['weight_decay']} "
          f"({recipe['weight_decay_mode']}), label smoothing {recipe['label_smoothing']}",
          flush=True)
    data = synthetic_data(FLAGS.batch_size, FLAGS.image_size, FLAGS.num_classes)
    with tf.device("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"), \
            tempfile.TemporaryDirectory(prefix="accelerator_") as history_dir:
        plain = plain_keras(recipe, data)
        print(f"plain_keras_images_per_s={plain:.1f}", flush=True)
        dense = pie_training(recipe, data, False, history_dir)
        print(f"pie_dense_images_per_s={dense:.1f}", flush=True)
        pruned = pie_training(recipe, data, True, history_dir)
        print(f"pie_pruned_images_per_s={pruned:.1f}", flush=True)
    for value in (plain, dense, pruned):
        if not math.isfinite(value) or value <= 0:
            raise RuntimeError(f"a training gave {value} images/s")
    print(f"dense_over_plain={dense / plain:.3f}")
    print(f"pruned_over_plain={pruned / plain:.3f}")


if __name__ == "__main__":
    app.run(main)
