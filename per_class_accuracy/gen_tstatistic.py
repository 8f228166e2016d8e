"""Per-class test of every compressed variant against the dense population.

    python -m per_class_accuracy.gen_tstatistic --workdir=W [--alpha=0.05] \
        [--correction=none|bh] [--distribution=clean|<corruption>/<severity>] \
        [--split=test] [--force]

For each variant `(method, sparsity)` and class: each member's class recall minus
its own population's mean top-1, then Welch's two-sided t-test between the variant's
members and the dense members (Hooker et al.). Writes `W/per_class/tstatistic.csv`
(one row per variant x class) and `W/per_class/tstatistic_summary.csv` (one row
per variant); columns and definitions in docs/analysis.md. Reads
`per_class_metrics.csv` when `aggregate_ckpt_metrics` wrote it from the current
predictions, and otherwise computes the same metrics from the predictions.
"""
import time

from absl import flags
from absl import logging

from pie.analysis import stage_io
from pie.io import cli
from pie.analysis import per_class
from pie.io import records
from pie.io.workdir import Workdir

stage_io.define_stage_flags()
flags.adopt_module_key_flags(stage_io)  # the shared flags show in --help
flags.DEFINE_float(
    "alpha", 0.05, "Significance level, in (0, 1): a class is significantly "
    "impacted when its (adjusted, see --correction) p-value is <= alpha.")
flags.DEFINE_string(
    "correction", "none", "Multiple-testing rule for `significant`: 'none' "
    "(p_value <= alpha, the paper's rule) or 'bh' (Benjamini-Hochberg adjusted "
    "p_value_bh <= alpha, over the classes of one variant).")
FLAGS = flags.FLAGS
STAGE = "gen_tstatistic"


def _metrics(workdir, manifest, inputs, distribution, split):
    """Per-class metrics: the saved file when it matches the inputs, else computed."""
    path = per_class.metrics_path(workdir, distribution)
    stamp = Workdir(workdir).stamp(per_class.STAGE_DIR, per_class.METRICS_STAGE, distribution)
    if stage_io.is_up_to_date(workdir, stamp,
                                 inputs, [path], {"distribution": distribution,
                                                  "split": split}):
        logging.info("reading per-class metrics from %s", path)
        return per_class.read_metrics(path)
    logging.info("%s missing or out of date: computing per-class metrics from the "
                 "predictions", path)
    predictions, class_names = stage_io.read_compact_predictions(
        workdir, manifest, distribution, split)
    return per_class.per_class_metrics(predictions, manifest, class_names)


def run(workdir, distribution=records.CLEAN, split="test", force=False, alpha=0.05,
        correction="none"):
    """Writes the per-class test tables; returns False when they were up to date."""
    stage_io.validate_stage_args(workdir, distribution, split)
    per_class.validate_test_options(alpha, correction)
    manifest = stage_io.population_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    wd = Workdir(workdir)
    stamp = wd.stamp(per_class.STAGE_DIR, STAGE, distribution)
    outputs = [wd.file("tstatistic", distribution), wd.file("tstatistic_summary", distribution)]
    inputs = stage_io.stage_input_paths(workdir, manifest, distribution, split)
    options = {"distribution": distribution, "split": split, "alpha": alpha,
               "correction": correction}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs,
                                               options):
        logging.info("%s up to date, skipping (--force to redo)", " and ".join(outputs))
        return False

    start = time.time()
    metrics = _metrics(workdir, manifest, inputs, distribution, split)
    table, summary = per_class.per_class_tstatistic(metrics, alpha, correction)
    records.write_csv(outputs[0], table, per_class.TSTATISTIC_COLUMNS)
    records.write_csv(outputs[1], summary, per_class.SUMMARY_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    logging.info("wrote %s (%d variants x classes, %d significant) in %.1f s",
                 outputs[0], len(table), int(table["significant"].sum()),
                 time.time() - start)
    return True


def main(argv):
    del argv
    if run(FLAGS.workdir, FLAGS.distribution, FLAGS.split, FLAGS.force, FLAGS.alpha,
           FLAGS.correction):
        stage_io.write_stage_flags(FLAGS.workdir, per_class.STAGE_DIR, STAGE,
                                      FLAGS.distribution)


if __name__ == "__main__":
    cli.run(main)
