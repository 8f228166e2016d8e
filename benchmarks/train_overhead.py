r"""Images per second of pruned training versus plain training, in one run.

  .venv/bin/python benchmarks/train_overhead.py [--dataset=mnist5k] [--model=small_cnn]

Trains the same model from the same seed twice, once plain and once wrapped with
tfmot pruning wrappers (polynomial schedule to 0.9, mask update every 10 steps),
and times the epochs after the first (the first pays for tracing).
"""
import time

from absl import app, flags

import pie  # noqa: F401
from pie.compress import pruning
from pie.data import sources
from pie.models import builders

import tensorflow_model_optimization as tfmot
import tf_keras as keras

flags.DEFINE_string("dataset", "mnist5k", "Dataset.")
flags.DEFINE_string("model", "small_cnn", "Model.")
flags.DEFINE_integer("epochs", 4, "Epochs per run; the first is not timed.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
FLAGS = flags.FLAGS


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def images_per_second(source, pruned):
    keras.utils.set_random_seed(0)
    model = builders.build(FLAGS.model, source.input_shape, source.num_classes)
    callbacks = [EpochTimer()]
    if pruned:
        steps = FLAGS.epochs * -(-source.train_size // FLAGS.batch_size)
        schedule = pruning.make_schedule("polynomial", 0.9, begin_step=0, end_step=steps // 2 // 10 * 10,
                                         frequency=10, total_steps=steps)
        model = pruning.wrap_for_pruning(model, schedule)
        callbacks.append(tfmot.sparsity.keras.UpdatePruningStep())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = source.train_batches(FLAGS.batch_size, seed=0, epoch=0).cache()
    model.fit(batches, epochs=FLAGS.epochs, verbose=0, callbacks=callbacks)
    timed = callbacks[0].times[1:]
    return source.train_size * len(timed) / sum(timed)


def main(argv):
    del argv
    source = sources.load(FLAGS.dataset)
    plain = images_per_second(source, pruned=False)
    wrapped = images_per_second(source, pruned=True)
    print(f"{FLAGS.model} on {FLAGS.dataset}, batch {FLAGS.batch_size}: plain {plain:.0f} img/s, "
          f"pruned {wrapped:.0f} img/s, pruned/plain = {wrapped / plain:.2f}")


if __name__ == "__main__":
    app.run(main)
