r"""CPU time to open a wide member's `.keras` file and to gzip it, the two ways each.

  .venv/bin/python benchmarks/member_file_io.py [--model=resnet50] [--side=32] \
      [--classes=4] [--pruned=0.5] [--repeats=2]

Builds `--model` (the study's ResNet-50 by default: 25 M weights, a 95 MB file),
zeroes the `--pruned` share of smallest weights of every kernel (what a pruned member
holds), saves it, then measures process CPU seconds, alternating `--repeats` times:

  load   tf_keras's `load_model(compile=False, safe_mode=True)`, whose h5py reads the
         zip entry in place (Python 3.11 rereads it from the start at each backward
         seek), against pie.models.loading.load_keras (the gate, then the weights
         read once into memory); both must give bit-identical weights (asserted);
  gzip   the file at level 9 against level 6 (pie.compress.quantize.GZIP_LEVEL), and
         the two sizes.

Last line: `load_speedup=<median CPU s of load_model / of load_keras>`.
"""
import gzip
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("model", "resnet50", "Model (pie.models.builders).")
flags.DEFINE_integer("side", 32, "Input side in pixels (the file's size does not depend on it).")
flags.DEFINE_integer("classes", 4, "Classes of the classifier.")
flags.DEFINE_float("pruned", 0.5, "Share of each kernel's smallest weights set to zero.")
flags.DEFINE_integer("repeats", 2, "Measurements of each kind, alternating.")
FLAGS = flags.FLAGS


def cpu_seconds(function):
    started = time.process_time()
    result = function()
    return time.process_time() - started, result


def pruned_member(path):
    from pie.models import builders
    model = builders.build(FLAGS.model, (FLAGS.side, FLAGS.side, 3), FLAGS.classes)
    for variable in model.trainable_weights:
        if "kernel" in variable.name:
            values = variable.numpy()
            cut = np.quantile(np.abs(values), FLAGS.pruned)
            variable.assign(np.where(np.abs(values) <= cut, 0, values))
    model.save(path)


def main(argv):
    del argv
    import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tf_keras as keras
    from pie.compress import quantize
    from pie.models import loading
    with tempfile.TemporaryDirectory(prefix="member-io-") as folder:
        path = os.path.join(folder, "member.keras")
        pruned_member(path)
        print(f"{FLAGS.model}, {FLAGS.pruned:.0%} of each kernel zero: "
              f"{os.path.getsize(path) / 1e6:.1f} MB", flush=True)
        plain, gated = [], []
        for repeat in range(FLAGS.repeats):
            seconds, reference = cpu_seconds(lambda: keras.models.load_model(
                path, compile=False, safe_mode=True))
            plain.append(seconds)
            seconds, loaded = cpu_seconds(lambda: loading.load_keras(path))
            gated.append(seconds)
            assert all(np.array_equal(a, b) for a, b in zip(reference.get_weights(),
                                                             loaded.get_weights()))
            print(f"load {repeat + 1}: load_model {plain[-1]:.2f} CPU s, "
                  f"load_keras {gated[-1]:.2f} CPU s (weights identical)", flush=True)
        with open(path, "rb") as handle:
            content = handle.read()
        for level in (9, quantize.GZIP_LEVEL):
            seconds, size = cpu_seconds(lambda: len(gzip.compress(content, level, mtime=0)))
            print(f"gzip level {level}: {seconds:.1f} CPU s, "
                  f"{len(content) / 1e6 / seconds:.1f} MB/s, {size} bytes", flush=True)
    print(f"load_speedup={statistics.median(plain) / statistics.median(gated):.2f}")


if __name__ == "__main__":
    app.run(main)
