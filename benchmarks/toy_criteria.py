r"""Times the full toy pruning-criteria grid for one dataset.

The full grid is 4 criteria x 8 reference-set sizes x 50 seeds at width 1000
(50 networks of ~2M parameters trained). With --seeds below 50 the run is
extrapolated: set-up + mean time per seed x 50 + the final aggregation.

    python benchmarks/toy_criteria.py --dataset=moons             # full grid
    python benchmarks/toy_criteria.py --dataset=moons --seeds=5   # extrapolated

All flags of `pie.stages.toy_experiment` apply. Prints the wall time
(measured, and extrapolated to 50 seeds) and the mean accuracy after pruning
per criterion and reference-set size next to the unpruned accuracy. Pin the cores to compare runs, e.g. `taskset -c 0,1`.
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
    per_seed = sum(seed_times) / max(1, len(seed_times))
    estimate = setup + per_seed * FULL_SEEDS + aggregation
    cores = len(os.sched_getaffinity(0))
    print(f"\n{FLAGS.dataset}: {len(seed_times)} seeds in {finished - started:.1f} s on "
          f"{cores} cores (set-up {setup:.1f} s, {per_seed:.2f} s per seed, first seed "
          f"{seed_times[0] if seed_times else 0:.2f} s incl. tracing, aggregation "
          f"{aggregation:.1f} s); process CPU time {cpu:.1f} s (wall time on an idle "
          f"machine lies between CPU time / cores and CPU time)")
    print(f"full grid ({FULL_SEEDS} seeds): "
          + (f"measured {finished - started:.1f} s" if FLAGS.seeds == FULL_SEEDS
             else f"extrapolated {estimate:.1f} s"))
    train = results[results["scenario"] == "train"]
    table = train.pivot_table(index="samples_per_class", columns=["stage", "criterion"],
                              values="accuracy", aggfunc="mean")
    after = table["after"].copy()
    after["unpruned"] = table["before"].iloc[:, 0]
    print(f"\nmean training accuracy after pruning ({FLAGS.seeds} seeds):")
    print(after.round(4).to_string())
    print(f"\noutputs in {out}")


if __name__ == "__main__":
    app.run(main)
