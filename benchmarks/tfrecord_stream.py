r"""The ImageNet-layout loader: first load (every file scanned) versus a cached load,
and the training stream's images per second, in one run.

  .venv/bin/python benchmarks/tfrecord_stream.py [--images=2000] [--shards=8]

Writes `--images` JPEGs (varying sizes up to 320 px, 1-based labels with class texts)
into `--shards` train shards and one validation shard in a temporary folder, then
times `sources.load` without and with the size cache, and one epoch of
`train_batches` (inception_crop views, batch 64) after a warm-up batch.
"""
import os
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import pie  # noqa: E402,F401
import imagenet_layout as layout  # noqa: E402
from pie.data import size_cache, sources  # noqa: E402

import numpy as np  # noqa: E402

flags.DEFINE_integer("images", 2000, "Training images.")
flags.DEFINE_integer("shards", 8, "Training shards.")
flags.DEFINE_integer("classes", 10, "Classes (labels 1..classes).")
FLAGS = flags.FLAGS


def write(folder):
    rng = np.random.default_rng(0)
    per_shard = FLAGS.images // FLAGS.shards
    for shard in range(FLAGS.shards):
        labels = 1 + (np.arange(per_shard) + shard) % FLAGS.classes
        layout.write_shard(
            os.path.join(folder, f"train-{shard:05d}-of-{FLAGS.shards:05d}"),
            [(layout.jpeg(rng, int(k)), int(k), f"class {k}") for k in labels])
    layout.write_shard(os.path.join(folder, "validation-00000-of-00001"),
                       [(layout.jpeg(rng, k), k, f"class {k}")
                        for k in range(1, FLAGS.classes + 1)])


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as folder:
        # The size cache goes to the user's cache folder (never into a data folder).
        os.environ["PIE_CACHE_DIR"] = os.path.join(folder, "cache")
        folder = os.path.join(folder, "data")
        os.makedirs(folder)
        write(folder)
        start = time.perf_counter()
        source = sources.load("tfrecord:" + folder)
        first = time.perf_counter() - start
        assert os.path.exists(os.path.join(os.environ["PIE_CACHE_DIR"],
                                           size_cache.WORKDIR_CACHE_NAME))
        start = time.perf_counter()
        source = sources.load("tfrecord:" + folder)
        cached = time.perf_counter() - start
        batches = iter(source.train_batches(64, seed=0, epoch=0, augment="inception_crop"))
        next(batches)
        start, seen = time.perf_counter(), 0
        for _, labels in batches:
            seen += len(labels)
        stream = seen / (time.perf_counter() - start)
    print(f"{source.train_size} training images in {FLAGS.shards} shards, "
          f"{source.num_classes} classes")
    print(f"first load (scan every file): {first:.2f} s; cached load: {cached:.2f} s")
    print(f"training stream, inception_crop to 224 px: {stream:.0f} images/s")
    print(f"cached_load_speedup={first / cached:.1f}")


if __name__ == "__main__":
    app.run(main)
