r"""Images per second of the training stage's pruned members against its dense ones.

  .venv/bin/python benchmarks/train_overhead.py [--dataset=mnist5k] [--model=small_cnn] \
      [--epochs=16] [--repeats=3] [--sparsity=0.9]

Times the real stage, `save_checkpoint.train`, not a copy of its recipe: each run
trains one member in a fresh workdir and process, a dense one (`--sparsities=0`)
and a magnitude-pruned one (`--sparsities=<s>`, the stage's polynomial schedule,
`UpdatePruningStep` and `PruningSummaries` callbacks, its loss and optimizer), same
seed and data order, alternating --repeats times so a change of load hits both.
The stage's own per-epoch lines give each epoch's time; the first epoch of a run
(tracing) is left out, the others are summed (their 0.1 s rounding averages out),
and the median of those sums over the runs of a kind is its steady time. Also printed: the whole member's wall time (process start,
tracing, checkpoints, evaluation and saving included). Last line:
`pruned_over_plain=<steady images/s of pruned / of dense>`.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("dataset", "mnist5k", "Dataset (an embedded one: nothing downloads).")
flags.DEFINE_string("model", "small_cnn", "Model.")
flags.DEFINE_integer("epochs", 16, "Epochs per member; the first is not timed (mnist5k: "
                     "about 0.6 s an epoch here, so 15 timed epochs, about 9 s a member).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("sparsity", 0.9, "Target sparsity of the pruned member.")
flags.DEFINE_integer("repeats", 3, "Members of each kind trained, in alternation.")
FLAGS = flags.FLAGS

# "[1/1] dense_0_seed0 epoch 3/6 loss 0.1234 acc 0.9876 (1.3s)", from EpochProgress.
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\((\d+(?:\.\d+)?)s\)")


def train_member(sparsity):
    """Trains one member with the stage; (steady epoch times, wall time)."""
    workdir = tempfile.mkdtemp(prefix="train_overhead_")
    command = [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
               f"--dataset={FLAGS.dataset}", f"--model={FLAGS.model}",
               f"--sparsities={sparsity:g}", "--seeds=1", "--method=magnitude",
               f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}"]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"save_checkpoint.train failed:\n{result.stderr[-2000:]}")
    epochs = [(int(m.group(1)), float(m.group(2)))
              for m in EPOCH_LINE.finditer(result.stdout + result.stderr)]
    if len(epochs) != FLAGS.epochs:
        raise RuntimeError(f"expected {FLAGS.epochs} epoch lines from the stage, found "
                           f"{len(epochs)}: has its progress line changed?")
    return [seconds for number, seconds in epochs if number > 1], wall


def main(argv):
    del argv
    if FLAGS.epochs < 2:
        raise app.UsageError("--epochs must be at least 2: the first is not timed")
    from pie.data import sources
    train_size = sources.load(FLAGS.dataset).train_size
    kinds = {"plain": 0.0, "pruned": FLAGS.sparsity}
    steady_times = {kind: [] for kind in kinds}
    walls = {kind: [] for kind in kinds}
    for repeat in range(FLAGS.repeats):
        for kind, sparsity in kinds.items():
            steady, wall = train_member(sparsity)
            steady_times[kind].append(sum(steady))
            walls[kind].append(wall)
            print(f"run {repeat + 1} {kind}: epochs after the first "
                  f"{', '.join(f'{s:.2f}' for s in steady)} s; member {wall:.1f} s", flush=True)
    rate = {kind: train_size * (FLAGS.epochs - 1) / statistics.median(steady_times[kind])
            for kind in kinds}
    wall = {kind: statistics.median(walls[kind]) for kind in kinds}
    print(f"{FLAGS.model} on {FLAGS.dataset}, batch {FLAGS.batch_size}, {FLAGS.epochs} epochs, "
          f"{FLAGS.repeats} members each (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores): steady epochs plain {rate['plain']:.0f} img/s, pruned "
          f"{rate['pruned']:.0f} img/s (sparsity {FLAGS.sparsity:g}); whole member plain "
          f"{wall['plain']:.1f} s, pruned {wall['pruned']:.1f} s")
    print(f"pruned_over_plain={rate['pruned'] / rate['plain']:.2f}")


if __name__ == "__main__":
    app.run(main)
