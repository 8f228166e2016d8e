r"""Training with TensorFlow's oneDNN kernels on (what `import pie` sets) against off.

  .venv/bin/python benchmarks/onednn_training.py [--epochs=12] [--repeats=2] \
      [--workers=2] [--dataset=mnist5k] [--model=small_cnn]

TensorFlow turns oneDNN on by itself only on x86 CPUs with AVX-512 VNNI or newer;
`import pie` sets TF_ENABLE_ONEDNN_OPTS=1 unless the variable is set. This trains the
same dense members (`pie train --sparsities=0`, one seed per worker process, as
`bash run.sh` trains: `--workers=2` on 2 cores gives each process one thread) with
the variable at 0 and at 1, alternating `--repeats` times, and prints each run's wall
and CPU seconds (user + system of the processes, TensorFlow's start included) and the
members' mean top-1 (the two kernels' float arithmetic differs, so the members differ
slightly).

Last line: `onednn_training_speedup=<median wall s off / median wall s on>`.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("epochs", 12, "Training epochs of each member.")
flags.DEFINE_integer("workers", 2, "Training processes, one seed each (pie train --workers).")
flags.DEFINE_integer("repeats", 2, "Runs of each setting, alternating.")
flags.DEFINE_string("dataset", "mnist5k", "Dataset (pie train --dataset).")
flags.DEFINE_string("model", "small_cnn", "Model (pie train --model).")
FLAGS = flags.FLAGS


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_once(onednn):
    """(wall s, CPU s, mean top-1) of the members trained with oneDNN `onednn` ('0'/'1')."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
                   f"--dataset={FLAGS.dataset}", f"--model={FLAGS.model}",
                   f"--seeds={FLAGS.workers}", "--sparsities=0", f"--epochs={FLAGS.epochs}",
                   f"--workers={FLAGS.workers}"]
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
        cpu, wall = children_cpu(), time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
        with open(os.path.join(workdir, "population.csv")) as handle:
            header = handle.readline().strip().split(",")
            top1 = [float(line.split(",")[header.index("top1")]) for line in handle]
        return wall, cpu, statistics.mean(top1)


def main(argv):
    del argv
    runs = {"0": [], "1": []}
    for repeat in range(FLAGS.repeats):
        for onednn in ("0", "1"):
            wall, cpu, top1 = train_once(onednn)
            runs[onednn].append(wall)
            print(f"run {repeat + 1} oneDNN {'on ' if onednn == '1' else 'off'}: "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU, top-1 {top1:.4f}", flush=True)
    off, on = statistics.median(runs["0"]), statistics.median(runs["1"])
    print(f"{FLAGS.model} on {FLAGS.dataset}, {FLAGS.workers} members of {FLAGS.epochs} "
          f"epochs: median wall {off:.1f} s off, {on:.1f} s on")
    print(f"onednn_training_speedup={off / on:.2f}")


if __name__ == "__main__":
    app.run(main)
