r"""Times the full toy pruning-criteria grid for one dataset.

The full grid is 4 criteria x 8 reference-set sizes x 50 seeds at width 1000
(50 networks of ~2M parameters trained). The first seed also pays for tracing
TensorFlow's functions, so it is timed on its own: the per-seed time is the mean
over the seeds after it, and the tracing is the first seed's excess over that.
With --seeds below 50 the run is extrapolated: set-up + first seed + per-seed
time x 49 + the final aggregation (needs --seeds >= 2).

    python benchmarks/toy_criteria.py --dataset=moons             # full grid
    python benchmarks/toy_criteria.py --dataset=moons --seeds=5   # extrapolated

All flags of `pie.stages.toy_experiment` apply. Prints the wall time
(measured, and extrapolated to 50 seeds) and the mean accuracy after pruning
per criterion and reference-set size next to the unpruned accuracy; last line
`full_grid_s=<seconds>`. Pin the cores to compare runs, e.g. `taskset -c 0,1`.
"""
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pie.stages import toy_experiment  # noqa: E402

FULL_SEEDS = 50
# The experiment's own flags (--dataset, --seeds, --out, --width, ...) apply; --out
# defaults to a new temporary folder (an existing run there would be continued,
# which makes the timing meaningless).
FLAGS = flags.FLAGS


def main(argv):
    del argv
    out = FLAGS.out or tempfile.mkdtemp(prefix="toy_criteria_bench_")
    stamps = []

    def log(line):
        stamps.append(time.time())
        print(line, flush=True)

    config = toy_experiment.config_from_flags()
    started = time.time()
    cpu_started = time.process_time()
    results = toy_experiment.run_experiment(config, out, log=log)
    finished = time.time()
    cpu = time.process_time() - cpu_started
    # stamps[0]: start message; stamps[1:]: one per finished seed.
    seed_times = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    if len(seed_times) != FLAGS.seeds:
        print(f"warning: {FLAGS.seeds - len(seed_times)} seeds were already done in {out}; "
              "the timing covers only the rest")
    setup = stamps[0] - started
    aggregation = finished - stamps[-1]
    if len(seed_times) < 2:
        raise app.UsageError("time at least 2 seeds: the first one includes tracing")
    first, later = seed_times[0], seed_times[1:]
    per_seed = sum(later) / len(later)  # steady: the first seed's tracing left out
    estimate = setup + first + per_seed * (FULL_SEEDS - 1) + aggregation
    cores = len(os.sched_getaffinity(0))
    print(f"\n{FLAGS.dataset}: {len(seed_times)} seeds in {finished - started:.1f} s on "
          f"{cores} cores: set-up {setup:.1f} s, first seed {first:.2f} s (of which "
          f"{first - per_seed:.2f} s tracing), then {per_seed:.2f} s per seed (mean of "
          f"{len(later)}), aggregation {aggregation:.1f} s; process CPU time {cpu:.1f} s "
          f"(wall time on an idle machine lies between CPU time / cores and CPU time)")
    total = finished - started if len(seed_times) == FULL_SEEDS else estimate
    print(f"full grid ({FULL_SEEDS} seeds): "
          + ("measured" if len(seed_times) == FULL_SEEDS else "extrapolated")
          + f" {total:.1f} s")
    train = results[results["scenario"] == "train"]
    table = train.pivot_table(index="samples_per_class", columns=["stage", "criterion"],
                              values="accuracy", aggfunc="mean")
    after = table["after"].copy()
    after["unpruned"] = table["before"].iloc[:, 0]
    print(f"\nmean training accuracy after pruning ({FLAGS.seeds} seeds):")
    print(after.round(4).to_string())
    print(f"\noutputs in {out}")
    print(f"full_grid_s={total:.1f}")


if __name__ == "__main__":
    toy_experiment.define_flags()  # the stage's flags: defined for command lines only
    app.run(main)
