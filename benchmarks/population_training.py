r"""Population training: member by member versus worker processes on shared graphs, one run.

  .venv/bin/python benchmarks/population_training.py [--seeds=4] [--epochs=6] \
      [--workers=0] [--repeats=1]

Trains the same population (by default the demo's: mnist5k, small_cnn, dense and
magnitude 0.5/0.8/0.95) with the real training stage twice per repeat, in fresh
workdirs and alternating order: once as before this change, one member at a time
each on a freshly built and traced model (`--workers=1 --noshare_graphs`),
and once the fast way (`--workers=0`: one worker process per core, started
together, each on the members of its seeds with one CPU thread, then on members of
the others nobody has started; within a worker the members of one method, whatever
their sparsity, on one shared, traced model). Both include process start-up and
exit. Prints wall
and CPU seconds of each, the largest difference between the saved weights of the
same member both ways (float rounding: one thread sums in another order than
two), and ends with the wall-clock ratio `speedup=...`.
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
FLAGS = flags.FLAGS


def train(workdir, extra):
    """Runs the training stage; (wall seconds, CPU seconds of the child)."""
    command = [sys.executable, "-m", "save_checkpoint.train", f"--workdir={workdir}",
               f"--dataset={FLAGS.dataset}", f"--model={FLAGS.model}",
               f"--sparsities={FLAGS.sparsities}", f"--seeds={FLAGS.seeds}",
               f"--epochs={FLAGS.epochs}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
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
    ways = {"member_by_member": ["--workers=1", "--noshare_graphs"],
            "workers": [f"--workers={FLAGS.workers}"]}
    times = {name: [] for name in ways}
    scratch = tempfile.mkdtemp(prefix="population_bench_")
    workdirs = {}
    try:
        for repeat in range(FLAGS.repeats):
            order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
            for name in order:
                workdir = os.path.join(scratch, f"{name}_{repeat}")
                wall, cpu = train(workdir, ways[name])
                times[name].append((wall, cpu))
                workdirs[name] = workdir
                print(f"{name} run {repeat + 1}: wall {wall:.1f}s, CPU {cpu:.1f}s", flush=True)
        worst, top1_slow, top1_fast, members = compare(workdirs["member_by_member"],
                                                       workdirs["workers"])
        print(f"{members} members ({FLAGS.dataset}, {FLAGS.model}, sparsities "
              f"{FLAGS.sparsities}, {FLAGS.seeds} seeds, {FLAGS.epochs} epochs); mean top-1 "
              f"{top1_slow:.4f} member by member, {top1_fast:.4f} with workers; largest "
              f"weight difference between the two ways: {worst:g}")
        slow, fast = times["member_by_member"], times["workers"]
        wall_ratio = median([w for w, _ in slow]) / median([w for w, _ in fast])
        cpu_ratio = median([c for _, c in slow]) / median([c for _, c in fast])
        print(f"member by member: wall {median([w for w, _ in slow]):.1f}s, CPU "
              f"{median([c for _, c in slow]):.1f}s; workers: wall "
              f"{median([w for w, _ in fast]):.1f}s, CPU {median([c for _, c in fast]):.1f}s; "
              f"CPU ratio {cpu_ratio:.2f}; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores")
        print(f"speedup={wall_ratio:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
