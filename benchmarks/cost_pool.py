r"""Wall time of the cost stage with its conversions in worker processes, against one process.

  .venv/bin/python benchmarks/cost_pool.py [--dataset=digits] [--model=resnet20] \
      [--width=4] [--seeds=3] [--epochs=1] [--workers=2] [--repeats=2]

Trains a small population with the training stage (`--sparsities=0,0.5`, `--seeds`
seeds: 2 x seeds Keras members; ResNet-20 because its float conversion, the part the
workers share out, takes seconds as on the real studies), then runs the real stage,
`python -m pie.stages.cost --force`, with `--workers=1` (everything in the stage's
process, as before) and with `--workers` (default 2), alternating `--repeats` times so
a change of the machine's load hits both. Checks that the two tables agree in every
column but the latencies. Last line: `cost_speedup=<median wall of --workers=1 / of
--workers=N>`.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("dataset", "digits", "Dataset (an embedded one: nothing downloads).")
flags.DEFINE_string("model", "resnet20", "Model.")
flags.DEFINE_integer("width", 4, "Model width (small: training is not what is timed).")
flags.DEFINE_integer("seeds", 3, "Seeds: the population has 2 x seeds Keras members.")
flags.DEFINE_integer("epochs", 1, "Training epochs of each member.")
flags.DEFINE_integer("workers", 2, "--workers of the pooled runs.")
flags.DEFINE_integer("repeats", 2, "Runs of each kind, alternating.")
flags.DEFINE_integer("timing_repeats", 10, "The stage's --repeats (latency calls).")
FLAGS = flags.FLAGS

LATENCY_COLUMNS = ["latency_ms_batch1", "latency_ms_batch32"]


def run(command):
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f"{command[0]} failed:\n{result.stderr[-2000:]}")


def timed_cost(workdir, workers):
    """(wall seconds, the cost table) of one forced run of the stage."""
    started = time.perf_counter()
    run(["pie.stages.cost", f"--workdir={workdir}", "--force", f"--workers={workers}",
         f"--repeats={FLAGS.timing_repeats}"])
    wall = time.perf_counter() - started
    return wall, pd.read_csv(os.path.join(workdir, "quantization", "cost.csv"))


def main(argv):
    del argv
    workdir = tempfile.mkdtemp(prefix="cost_pool_")
    try:
        started = time.perf_counter()
        run(["save_checkpoint.train", f"--workdir={workdir}", f"--dataset={FLAGS.dataset}",
             f"--model={FLAGS.model}", f"--width={FLAGS.width}", "--sparsities=0,0.5",
             f"--seeds={FLAGS.seeds}", f"--epochs={FLAGS.epochs}", "--workers=0"])
        print(f"trained {2 * FLAGS.seeds} members in {time.perf_counter() - started:.0f} s",
              flush=True)
        walls, tables = {1: [], FLAGS.workers: []}, {}
        for repeat in range(FLAGS.repeats):
            for workers in walls:
                wall, tables[workers] = timed_cost(workdir, workers)
                walls[workers].append(wall)
                print(f"run {repeat + 1} --workers={workers}: {wall:.1f} s (load average "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
        pd.testing.assert_frame_equal(tables[1].drop(columns=LATENCY_COLUMNS),
                                      tables[FLAGS.workers].drop(columns=LATENCY_COLUMNS))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    serial, pooled = statistics.median(walls[1]), statistics.median(walls[FLAGS.workers])
    print(f"{2 * FLAGS.seeds} {FLAGS.model} members on {os.cpu_count()} cores: --workers=1 "
          f"{serial:.1f} s, --workers={FLAGS.workers} {pooled:.1f} s (medians of "
          f"{FLAGS.repeats}); tables equal but the latencies")
    print(f"cost_speedup={serial / pooled:.2f}")


if __name__ == "__main__":
    app.run(main)
