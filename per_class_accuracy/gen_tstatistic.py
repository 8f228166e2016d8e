"""Per-class test of every compressed variant against the dense population.

    python -m per_class_accuracy.gen_tstatistic --workdir=W [--alpha=0.05] \
        [--test=welch|paired|permutation] [--correction=bh|none|bh_all] [--min_errors=N] \
        [--distribution=clean|<corruption>/<severity>] [--also_distributions=a,b] \
        [--resamples=9999] [--resample_seed=0] [--split=test] [--force]

For each variant `(method, sparsity)` and class: each member's class recall minus
its own population's mean top-1, then a test between the variant's members and the
dense members: Welch's two-sided t-test (default, Hooker et al.), a paired t-test
by seed, or a permutation test; the interval of the effect that inverts the test;
the multiple-testing rule (Benjamini-Hochberg per variant by default, `none` the
paper's rule, `bh_all` over every variant x class of every distribution analysed in
the run); classes with fewer than --min_errors errors are `ceiling`, not tested. Writes `W/per_class/tstatistic.csv`
(one row per variant x class) and `W/per_class/tstatistic_summary.csv` (one row
per variant); columns and definitions in docs/analysis.md. Reads
`per_class_metrics.csv` when `aggregate_ckpt_metrics` wrote it from the current
predictions, and otherwise computes the same metrics from the predictions.
"""
import time

import pandas as pd

from absl import flags
from absl import logging

from pie.analysis import stage_io
from pie.io import cli, journal
from pie.analysis import per_class
from pie.analysis import stats
from pie.io import records
from pie.io.workdir import Workdir


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    stage_io.define_stage_flags(flag_values)
    stage_io.define_test_flags(flag_values)  # --test, --resamples, --resample_seed
    # The shared flags show in --help.
    flags.adopt_module_key_flags(stage_io, flag_values=flag_values)
    flags.DEFINE_float(
        "alpha", 0.05, "Significance level, in (0, 1): a class is significantly "
        "impacted when its (adjusted, see --correction) p-value is <= alpha.",
        flag_values=flag_values)
    per_class.define_decision_flags(flag_values)  # --correction, --min_errors
    flags.DEFINE_list(
        "also_distributions", [], "More distributions analysed in the same run (each "
        "written to its own folder), so that --correction=bh_all spans all of them.",
        flag_values=flag_values)


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


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, distribution=records.CLEAN, split="test", force=False, alpha=0.05,
        correction=stats.DEFAULT_CORRECTION, test="welch", resamples=stats.DEFAULT_RESAMPLES,
        resample_seed=0, also_distributions=(), min_errors=None):
    """Writes the per-class test tables; returns False when they were up to date."""
    distributions = list(dict.fromkeys([distribution] + list(also_distributions)))
    for name in distributions:
        stage_io.validate_stage_args(workdir, name, split)
    per_class.validate_test_options(alpha, correction, test, resamples, min_errors,
                                    resample_seed)
    manifest = stage_io.population_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    wd = Workdir(workdir)
    stamps = {name: wd.stamp(per_class.STAGE_DIR, STAGE, name) for name in distributions}
    outputs = {name: [wd.file("tstatistic", name), wd.file("tstatistic_summary", name)]
               for name in distributions}
    inputs = {name: stage_io.stage_input_paths(workdir, manifest, name, split)
              for name in distributions}
    every_input = [path for name in distributions for path in inputs[name]]
    options = {"distributions": distributions, "split": split, "alpha": alpha,
               "correction": correction, "test": test, "resamples": resamples,
               "resample_seed": resample_seed, "min_errors": min_errors}
    if not force and all(stage_io.is_up_to_date(workdir, stamps[name], every_input,
                                                outputs[name], options)
                         for name in distributions):
        logging.info("%s up to date, skipping (--force to redo)",
                     " and ".join(path for name in distributions for path in outputs[name]))
        return False

    start = time.time()
    tables, summaries = [], []
    for name in distributions:  # every input is read and checked before anything is written
        metrics = _metrics(workdir, manifest, inputs[name], name, split)
        table, summary = per_class.compare_variants(metrics, test, alpha, resamples,
                                                    resample_seed, min_errors)
        tables.append(table.assign(_distribution=name))
        summaries.append(summary.assign(_distribution=name))
    table = pd.concat(tables, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    family = "variant x class" + (" x distribution" if len(distributions) > 1 else "")
    table, summary = per_class.decide(table, summary, alpha, correction,
                                      ("_distribution", "method", "sparsity"), family)
    for name in distributions:
        records.write_csv(outputs[name][0], table[table["_distribution"] == name],
                          per_class.TSTATISTIC_COLUMNS)
        records.write_csv(outputs[name][1], summary[summary["_distribution"] == name],
                          per_class.SUMMARY_COLUMNS)
    for name in distributions:
        stage_io.write_stamp(workdir, stamps[name], every_input, outputs[name], options)
    logging.info("wrote %s (%d variants x classes, %d significant, %d uncorrected, %d "
                 "ceiling) in %.1f s",
                 ", ".join(outputs[name][0] for name in distributions), len(table),
                 int(table["significant"].sum()) if len(table) else 0,
                 int(table["significant_uncorrected"].sum()) if len(table) else 0,
                 int((table["direction"] == per_class.CEILING).sum()) if len(table) else 0,
                 time.time() - start)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.distribution, settings.split, settings.force, settings.alpha,
           settings.correction, settings.test, settings.resamples, settings.resample_seed,
           settings.also_distributions, settings.min_errors):
        for name in dict.fromkeys([settings.distribution] + settings.also_distributions):
            stage_io.write_stage_flags(settings.workdir, per_class.STAGE_DIR, STAGE, name,
                                           settings.flags_text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
