"""The `pie` command: every stage by a short name, `pie <stage> --flags`.

    pie train --workdir=W --dataset=mnist5k ...   # = python -m save_checkpoint.train ...
    pie --help                                      # the stages and their modules

Each stage stays a module that `python -m <module>` runs; this dispatcher runs the
same module as `__main__` (runpy), so a stage behaves identically in both forms:
its flags (defined by the module's `define_flags()` in its `__main__` block, never on
import), `--help`, exit codes and saved flags files.
"""
import collections
import runpy
import sys

# The stage table: every stage once, in the order a study runs them. `pie --help`
# (STAGES), the study's plan and its --skip names (STUDY_STAGES), the order in which
# the study may run stages side by side (`after`, `alone`), the workdir's writers
# (pie.io.workdir.FILES names stages of it) and the report's commands for a missing
# input (`command`) derive from it (tests/test_commands.py).
#   needs: stages whose outputs it reads that another stage's outputs do not imply
#          (the report's command for its files runs them first);
#   args:  its arguments in the report's commands ({W} is the workdir);
#   after: every stage whose outputs it reads (ALL: every stage before it): a study
#          starts it only when those of them it runs have finished;
#   alone: nothing runs beside it (its figures are timings).
Stage = collections.namedtuple("Stage", "name module in_study needs args after alone",
                               defaults=((), "--workdir={W}", (), False))
ALL = ("*",)
TABLE = (
    Stage("train", "save_checkpoint.train", True),
    Stage("import-members", "save_checkpoint.import_members", False),
    Stage("quantize", "pie.stages.quantize", True, after=("train", "import-members")),
    Stage("predictions", "pie_dataset_gen.predictions", True, after=("quantize",)),
    Stage("per-class", "per_class_accuracy.aggregate_ckpt_metrics", True,
          after=("predictions",)),
    Stage("t-test", "per_class_accuracy.gen_tstatistic", True, after=("per-class",)),
    Stage("pies", "pie_dataset_gen.aggregate_predictions", True, after=("predictions",)),
    Stage("pie-tfrecords", "pie_dataset_gen.generate_pie_dataset", True, after=("pies",)),
    Stage("subgroups", "per_class_accuracy.subgroups", True,
          args="--workdir={W} --groups_csv=<file>", after=("predictions", "pies")),
    Stage("corruptions", "robustness_tests.corruptions", True, after=("quantize",)),
    Stage("robustness", "robustness_tests.analyze", True, needs=("corruptions",),
          after=("corruptions", "predictions")),
    # (reads robustness' excess error)
    Stage("noise-floor", "per_class_accuracy.noise_floor", True,
          after=("predictions", "robustness")),
    Stage("noise-similarity", "robustness_tests.noise_similarity", True, after=("quantize",)),
    Stage("informative-features", "robustness_tests.informative_features", True,
          after=("quantize",)),
    Stage("cost", "pie.stages.cost", True, after=("quantize",), alone=True),
    Stage("toy", "pie.stages.toy_experiment", True, args="--out={W}/toy"),
    Stage("report", "pie.report.build", True, after=ALL),
    Stage("study", "pie.stages.study", False),  # every stage above, in order (run.sh)
)
# Stage name -> module.
STAGES = {stage.name: stage.module for stage in TABLE}
# The stages a study runs, in order: its plan and its --skip names.
STUDY_STAGES = tuple(stage.name for stage in TABLE if stage.in_study)


BY_NAME = {stage.name: stage for stage in TABLE}


def prerequisites(name):
    """Every stage whose outputs stage `name` reads, directly or through another
    (`after`; ALL: every stage before it in the table)."""
    stage = BY_NAME[name]
    if stage.after == ALL:
        return {other.name for other in TABLE[:TABLE.index(stage)]}
    found = set()
    for other in stage.after:
        found |= {other} | prerequisites(other)
    return found


def command(name):
    """The command line that makes stage `name`'s outputs ({W}: the workdir), after
    the stages it needs: what the report tells a user to run for a missing input."""
    stage = BY_NAME[name]
    return " && ".join([*(command(need) for need in stage.needs),
                        f"python -m {stage.module} {stage.args}"])


def stage_of_module(module):
    """The stage name of a stage module (None when it is not a stage)."""
    return next((stage.name for stage in TABLE if stage.module == module), None)


def available_stages():
    """The registry's stages whose module is installed (some arrive with later work)."""
    import importlib.util
    return {name: module for name, module in STAGES.items()
            if importlib.util.find_spec(module) is not None}


def usage():
    lines = ["usage: pie <stage> [--flags]   (pie <stage> --help for a stage's flags)",
             "", "stages:"]
    for name, module in available_stages().items():
        lines.append(f"  {name:<22} python -m {module}")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0
    stage = argv[1]
    stages = available_stages()
    if stage not in stages:
        print(f"error: unknown stage '{stage}'; allowed: {', '.join(stages)}", file=sys.stderr)
        return 2
    sys.argv = [f"pie {stage}", *argv[2:]]
    runpy.run_module(stages[stage], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
