"""The `pie` command: every stage by a short name, `pie <stage> --flags`.

    pie train --workdir=W --dataset=mnist5k ...   # = python -m save_checkpoint.train ...
    pie --help                                      # the stages and their modules

Each stage stays a module that `python -m <module>` runs; this dispatcher runs the
same module as `__main__` (runpy), so a stage behaves identically in both forms:
its flags (defined by the module's `define_flags()` in its `__main__` block, never on
import), `--help`, exit codes and saved flags files.
"""
import runpy
import sys

# Stage name -> module, in the order a study runs them.
STAGES = {
    "train": "save_checkpoint.train",
    "import-members": "save_checkpoint.import_members",
    "quantize": "pie.stages.quantize",
    "predictions": "pie_dataset_gen.predictions",
    "per-class": "per_class_accuracy.aggregate_ckpt_metrics",
    "t-test": "per_class_accuracy.gen_tstatistic",
    "pies": "pie_dataset_gen.aggregate_predictions",
    "pie-tfrecords": "pie_dataset_gen.generate_pie_dataset",
    "subgroups": "per_class_accuracy.subgroups",
    "corruptions": "robustness_tests.corruptions",
    "robustness": "robustness_tests.analyze",
    "noise-floor": "per_class_accuracy.noise_floor",  # after robustness: its excess error
    "noise-similarity": "robustness_tests.noise_similarity",
    "informative-features": "robustness_tests.informative_features",
    "cost": "pie.stages.cost",
    "toy": "pie.stages.toy_experiment",
    "report": "pie.report.build",
    "study": "pie.stages.study",  # every stage above, in order (what run.sh runs)
}


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
