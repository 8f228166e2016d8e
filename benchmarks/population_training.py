r"""Population training: the member-by-member loop against worker processes on shared
graphs, side by side in one run.

  .venv/bin/python benchmarks/population_training.py [--seeds=4] [--epochs=6] \
      [--workers=0] [--repeats=1] [--baseline=filed]

Trains the same population (by default the demo's: mnist5k, small_cnn, dense and
magnitude 0.5/0.8/0.95) with the training stage, in fresh workdirs, each way once
per repeat in alternating order:

- `filed`: the member-by-member loop as issue 16 found it, the stage of commit
  FILED_COMMIT (taken out of this clone's git history into a temporary folder with
  `git archive`): one freshly built and traced model a member, one `fit` an epoch,
  one step a call. The issue asks for 2x against this loop.
- `member_by_member`: today's stage, one member at a time, each on a freshly built
  and traced model (`--workers=1 --noshare_graphs`). It carries this issue's changes
  to what every member pays (start-up, data pipeline, one `fit` per run of epochs,
  evaluation), so the ratio against it is the gain of the workers and shared graphs
  alone.
- `workers`: today's fast way (`--workers=0`: one worker process per core, started
  together, each on the members of its seeds with one CPU thread, then on members
  of the others nobody has started; within a worker the members of one method,
  whatever their sparsity, on one shared, traced model).

Every way includes process start-up and exit. Prints the wall and CPU seconds of
each and the largest difference between the saved weights of the same member
trained two ways: none between the two member-by-member loops (asserted: the same
weights bit for bit), float rounding against the workers (one thread sums in
another order than two). The last two lines are the ratio against today's loop,
`speedup_over_member_by_member=...`, and the headline, the wall-clock ratio against
the baseline, `speedup=...`. `--baseline=member_by_member` makes today's loop the
baseline (for a clone without the history).
"""
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_string("dataset", "mnist5k", "Dataset.")
flags.DEFINE_string("model", "small_cnn", "Model.")
flags.DEFINE_string("sparsities", "0,0.5,0.8,0.95", "Sparsities of the population.")
flags.DEFINE_integer("seeds", 4, "Seeds per sparsity.")
flags.DEFINE_integer("epochs", 6, "Epochs per member.")
flags.DEFINE_integer("workers", 0, "--workers of the fast way (0: one per core).")
flags.DEFINE_integer("repeats", 1, "Runs of each way (alternating); the medians are compared.")
flags.DEFINE_enum("baseline", "filed", ["filed", "member_by_member"],
                  "The loop `speedup=` is measured against: filed (the stage of "
                  "FILED_COMMIT, needs the git history) or member_by_member (today's).")
FLAGS = flags.FLAGS

# The last commit whose training stage is the loop issue 16 measured: its next commit
# on main starts the changes to training (shared graphs).
FILED_COMMIT = "d4424fcc881e98875632561f1fa7b18afbef1292"


def filed_stage(scratch):
    """The folder holding FILED_COMMIT's stage (pie/ and save_checkpoint/)."""
    folder = os.path.join(scratch, "filed_code")
    os.makedirs(folder)
    archive = subprocess.run(["git", "-C", ROOT, "archive", FILED_COMMIT, "pie",
                              "save_checkpoint"], capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"population_training: commit {FILED_COMMIT[:7]} (the loop issue 16 "
                 "measured) is not in this clone's git history; fetch it (git fetch "
                 "--unshallow) or run with --baseline=member_by_member")
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def train(workdir, extra, code=ROOT):
    """Runs the training stage of the code in `code`; (wall seconds, CPU seconds of
    the child)."""
    command = [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
               f"--dataset={FLAGS.dataset}", f"--model={FLAGS.model}",
               f"--sparsities={FLAGS.sparsities}", f"--seeds={FLAGS.seeds}",
               f"--epochs={FLAGS.epochs}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=code, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def compare(first, second):
    """(largest |difference| between the saved weights of the same members, mean
    top-1 of each run, number of members)."""
    import numpy as np
    import pie  # noqa: F401
    from pie.io import records
    from pie.models import loading
    a = records.read_manifest(first).set_index("member_id")
    b = records.read_manifest(second).set_index("member_id")
    assert sorted(a.index) == sorted(b.index), "the two runs trained different members"
    worst = 0.0
    for member_id in a.index:
        wa = loading.load_keras(os.path.join(first, a.loc[member_id, "model_file"]))
        wb = loading.load_keras(os.path.join(second, b.loc[member_id, "model_file"]))
        for x, y in zip(wa.get_weights(), wb.get_weights()):
            worst = max(worst, float(np.abs(x - y).max()))
    return worst, a["top1"].mean(), b.loc[a.index, "top1"].mean(), len(a)


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def main(argv):
    del argv
    scratch = tempfile.mkdtemp(prefix="population_bench_")
    ways = {"member_by_member": (["--workers=1", "--noshare_graphs"], ROOT),
            "workers": ([f"--workers={FLAGS.workers}"], ROOT)}
    try:
        if FLAGS.baseline == "filed":
            ways = {"filed": ([], filed_stage(scratch)), **ways}
        times = {name: [] for name in ways}
        workdirs = {}
        for repeat in range(FLAGS.repeats):
            order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
            for name in order:
                workdir = os.path.join(scratch, f"{name}_{repeat}")
                extra, code = ways[name]
                wall, cpu = train(workdir, extra, code)
                times[name].append((wall, cpu))
                workdirs[name] = workdir
                print(f"{name} run {repeat + 1}: wall {wall:.1f}s, CPU {cpu:.1f}s", flush=True)
        worst, top1_slow, top1_fast, members = compare(workdirs["member_by_member"],
                                                       workdirs["workers"])
        print(f"{members} members ({FLAGS.dataset}, {FLAGS.model}, sparsities "
              f"{FLAGS.sparsities}, {FLAGS.seeds} seeds, {FLAGS.epochs} epochs); mean top-1 "
              f"{top1_slow:.4f} member by member, {top1_fast:.4f} with workers; largest "
              f"weight difference between them: {worst:g}")
        if "filed" in ways:
            # Both loops are one process, one member at a time: the same weights bit
            # for bit, or the baseline is not the same training.
            worst, *_ = compare(workdirs["filed"], workdirs["member_by_member"])
            assert worst == 0, f"the loop as found saved other weights (by {worst:g})"
            print("filed vs member_by_member: the same weights bit for bit")
        walls = {name: median([w for w, _ in runs]) for name, runs in times.items()}
        cpus = {name: median([c for _, c in runs]) for name, runs in times.items()}
        print("; ".join(f"{name}: wall {walls[name]:.1f}s, CPU {cpus[name]:.1f}s"
                        for name in ways)
              + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"speedup_over_member_by_member="
              f"{walls['member_by_member'] / walls['workers']:.2f}")
        print(f"speedup={walls[FLAGS.baseline] / walls['workers']:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
