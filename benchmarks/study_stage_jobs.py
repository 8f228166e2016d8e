r"""The study's stages after training, one after another against side by side.

  .venv/bin/python benchmarks/study_stage_jobs.py [--seeds=3] [--epochs=2] [--repeats=2] \
      [--jobs=2]

Trains one population once (the embedded study's data, model and methods, at
--seeds and --epochs: `pie.stages.study` with its defaults but those two), then runs
every later stage of the same study on fresh copies of it, `--stage_jobs=1` and
`--stage_jobs=<jobs>` alternating --repeats times so a change of load hits both, and
compares the wall times of the whole run (every stage, the report included). Both
runs must give the same report (checked: its summary table is identical but for the
latency column, a timing). Last line:
`stage_jobs_speedup=<median wall one after another / median wall side by side>`.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pie import commands  # noqa: E402

flags.DEFINE_integer("seeds", 3, "Seeds of the population (the embedded study has 10).")
flags.DEFINE_integer("epochs", 2, "Epochs of each member (the embedded study has 12).")
flags.DEFINE_integer("repeats", 2, "Runs of each kind, alternating.")
flags.DEFINE_integer("jobs", 2, "--stage_jobs of the side-by-side runs.")
FLAGS = flags.FLAGS


def study(workdir, *extra):
    command = [sys.executable, "-m", "pie.stages.study", f"--workdir={workdir}",
               f"--seeds={FLAGS.seeds}", f"--epochs={FLAGS.epochs}", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"study failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def summary_without_latency(workdir):
    """The report's summary table (its first), the cells of its latency column (a
    timing) left out."""
    from pie.io.workdir import Workdir
    lines = open(Workdir(workdir).file("report_markdown")).read().splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append(line.split(" | "))
    timed = {index for index, cell in enumerate(table[0]) if "latency" in cell}
    return [[cell for index, cell in enumerate(row) if index not in timed] for row in table]


def main(argv):
    del argv
    root = tempfile.mkdtemp(prefix="study_stage_jobs_")
    try:
        trained = os.path.join(root, "trained")
        # Training and the extra populations once; the later stages are what is timed.
        study(trained, "--skip=" + ",".join(
            name for name in commands.STUDY_STAGES if name != "train"))
        walls = {1: [], FLAGS.jobs: []}
        summaries = {}
        for repeat in range(FLAGS.repeats):
            for jobs in (1, FLAGS.jobs):
                workdir = os.path.join(root, f"jobs{jobs}_{repeat}")
                shutil.copytree(trained, workdir, symlinks=True)
                walls[jobs].append(study(workdir, f"--stage_jobs={jobs}"))
                summaries[jobs] = summary_without_latency(workdir)
                print(f"--stage_jobs={jobs}, run {repeat + 1}: {walls[jobs][-1]:.1f} s",
                      flush=True)
                shutil.rmtree(workdir)
        if summaries[1] != summaries[FLAGS.jobs]:
            import difflib
            print("\n".join(list(difflib.unified_diff(
                [" | ".join(row) for row in summaries[1]],
                [" | ".join(row) for row in summaries[FLAGS.jobs]], lineterm=""))[:40]))
            raise RuntimeError("the two runs' reports differ beyond their latencies")
        one, side = statistics.median(walls[1]), statistics.median(walls[FLAGS.jobs])
        print(f"one after another {one:.1f} s, {FLAGS.jobs} at once {side:.1f} s "
              f"(medians of {FLAGS.repeats}; {os.cpu_count()} cores)")
        print(f"stage_jobs_speedup={one / side:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
