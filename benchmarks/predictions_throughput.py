r"""Throughput of the predictions stage against plain Keras loading and `model.predict`.

  .venv/bin/python benchmarks/predictions_throughput.py [--workdir=W] [--repeats=3] \
      [--members=4] [--tile=10]

With no --workdir, trains one small mnist5k member into a temporary folder first.
On the eval set repeated --tile times, times for --members members (the same model
file, loaded afresh each time, so every member pays for loading and tracing as in
a real run):

  plain  `tf_keras.models.load_model(path)` then `model.predict(images)`;
  stage  the stage's own loop, `pie.models.predict.predict_members` over members
         loaded by `load_member` (the checked loader): loading, tracing,
         inference, the predictions frame and the Parquet file, each written
         while the next member runs.

Both run in alternation --repeats times; the best of each is reported. Last line:
`stage_over_plain=<stage images/s / plain images/s>` (the stage should stay at or
above 0.8 of plain predict).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.data import sources  # noqa: E402
from pie.io import records  # noqa: E402
from pie.io.workdir import Workdir  # noqa: E402
from pie.models import predict  # noqa: E402

flags.DEFINE_string("workdir", None, "A workdir with a trained population (its first member "
                    "is used).")
flags.DEFINE_integer("repeats", 3, "Timed repeats of each path; the best is reported.")
flags.DEFINE_integer("batch_size", 256, "Batch size of both paths.")
flags.DEFINE_integer("members", 4, "Members per timed run.")
flags.DEFINE_integer("tile", 10, "Repeat the eval set this many times.")
FLAGS = flags.FLAGS


def best_times(functions, repeats):
    """Best time of each function, run in alternation so load changes hit both."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, spent in zip(functions, times):
            start = time.perf_counter()
            function()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def main(argv):
    del argv
    workdir = FLAGS.workdir
    trained = workdir is None
    if trained:
        workdir = tempfile.mkdtemp(prefix="predictions_throughput_")
        subprocess.run([sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
                        "--sparsities=0", "--seeds=1", "--epochs=1"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tempfile.mkdtemp(prefix="predictions_throughput_out_")
    try:
        row = records.read_manifest(workdir).iloc[0].to_dict()
        path = Workdir(workdir).model_path(row)
        source = sources.load_for_workdir(workdir)
        batches = list(source.eval_batches(FLAGS.batch_size).as_numpy_iterator())
        inputs = np.tile(np.concatenate([b["inputs"] for b in batches]),
                         (FLAGS.tile,) + (1,) * len(source.input_shape))
        labels = np.tile(np.concatenate([b["label"] for b in batches]), FLAGS.tile)
        arrays = (inputs, labels, np.arange(len(labels)))

        def plain():
            import tf_keras as keras
            for _ in range(FLAGS.members):
                model = keras.models.load_model(path, compile=False)
                model.predict(inputs, batch_size=FLAGS.batch_size, verbose=0)

        def stage():
            members = ((f"m{k}", predict.load_member(workdir, row))
                       for k in range(FLAGS.members))
            predict.predict_members(out, members, source, arrays, FLAGS.batch_size, "test")

        stage()  # TensorFlow's own one-time start-up, paid by neither timing
        plain_s, stage_s = best_times([plain, stage], FLAGS.repeats)
        n = len(inputs) * FLAGS.members
        print(f"{FLAGS.members} members x {len(inputs)} images, loading and tracing included "
              f"(best of {FLAGS.repeats}): plain load_model + predict {n / plain_s:.0f} img/s "
              f"({plain_s / FLAGS.members:.2f} s a member), predictions stage "
              f"{n / stage_s:.0f} img/s ({stage_s / FLAGS.members:.2f} s a member)")
        print(f"stage_over_plain={plain_s / stage_s:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if trained:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
