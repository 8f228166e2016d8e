r"""Throughput of the predictions stage against plain `model.predict` on the same images.

  .venv/bin/python benchmarks/predictions_throughput.py [--workdir=W] [--repeats=5]

With no --workdir, trains one small mnist5k member into a temporary folder first.
Times, on one loaded member and the eval set repeated --tile times, (a) --members
calls of plain `model.predict` and (b) the stage's own loop
(`pie.models.predict.predict_members`) over --members members: inference,
the predictions frame and the gzip CSV, written while the next member runs. Both
run in alternation --repeats times; the best of each and their ratio are
reported (the stage must stay at or above 80% of plain predict). Model loading
is left out of both: plain predict needs a loaded model too.
"""
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import pie  # noqa: F401
from pie.data import sources
from pie.io import records
from pie.models import predict

flags.DEFINE_string("workdir", None, "A workdir with a trained population.")
flags.DEFINE_integer("repeats", 5, "Timed repeats; the best is reported.")
flags.DEFINE_integer("batch_size", 256, "Batch size of both paths.")
flags.DEFINE_integer("members", 4, "Members per timed run.")
flags.DEFINE_integer("tile", 10, "Repeat the eval set this many times (steadier timings).")
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
    if workdir is None:
        workdir = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
                        "--sparsities=0", "--seeds=1", "--epochs=1"], check=True,
                       stdout=subprocess.DEVNULL)
    row = records.read_manifest(workdir).iloc[0].to_dict()
    source = sources.load_for_workdir(workdir)
    batches = list(source.eval_batches(FLAGS.batch_size).as_numpy_iterator())
    import numpy as np
    inputs = np.tile(np.concatenate([b["inputs"] for b in batches]),
                     (FLAGS.tile,) + (1,) * len(source.input_shape))
    labels = np.tile(np.concatenate([b["label"] for b in batches]), FLAGS.tile)
    ids = np.arange(len(labels))
    member = predict.load_member(workdir, row)
    model = member.model
    model.predict(inputs, batch_size=FLAGS.batch_size, verbose=0)  # warm-up

    out = tempfile.mkdtemp()
    arrays = (inputs, labels, ids)

    def stage():
        members = ((f"m{k}", member) for k in range(FLAGS.members))
        predict.predict_members(out, members, source, arrays, FLAGS.batch_size, "test")

    def plain_predict():
        for _ in range(FLAGS.members):
            model.predict(inputs, batch_size=FLAGS.batch_size, verbose=0)

    plain, ours = best_times([plain_predict, stage], FLAGS.repeats)
    n = len(inputs) * FLAGS.members
    print(f"{n} images: model.predict {n / plain:.0f} img/s, predictions stage "
          f"{n / ours:.0f} img/s, ratio {plain / ours:.2f}")


if __name__ == "__main__":
    app.run(main)
