"""Per-class metrics of every population member, from its saved predictions.

    python -m per_class_accuracy.aggregate_ckpt_metrics --workdir=W \
        [--distribution=clean|<corruption>/<severity>] [--split=test] [--force]

Writes `W/per_class/per_class_metrics.csv` (shifted distributions:
`W/per_class/<corruption>-<severity>/`): one row per member x class with n,
correct, recall, precision and the member's top-1 (columns in docs/analysis.md).
No model is run: everything comes from `W/predictions/`.
"""
import time

from absl import flags
from absl import logging

from pie.analysis import stage_io
from pie.io import cli, journal
from pie.analysis import per_class
from pie.io import records
from pie.io.workdir import Workdir


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    stage_io.define_stage_flags(flag_values)
    # The shared flags show in --help.
    flags.adopt_module_key_flags(stage_io, flag_values=flag_values)


FLAGS = flags.FLAGS


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, distribution=records.CLEAN, split="test", force=False):
    """Writes the per-class metrics; returns False when they were up to date."""
    stage_io.validate_stage_args(workdir, distribution, split)
    manifest = stage_io.population_manifest(workdir)
    output = per_class.metrics_path(workdir, distribution)
    stamp = Workdir(workdir).stamp(per_class.STAGE_DIR, per_class.METRICS_STAGE, distribution)
    inputs = stage_io.stage_input_paths(workdir, manifest, distribution, split)
    options = {"distribution": distribution, "split": split}
    if not force and stage_io.is_up_to_date(
            workdir, stamp, inputs, [output], options):
        logging.info("%s up to date, skipping (--force to redo)", output)
        return False

    start = time.time()
    predictions, class_names = stage_io.read_compact_predictions(
        workdir, manifest, distribution, split)
    logging.info("read %d predictions of %d members (%d classes) in %.1f s",
                 len(predictions), len(manifest), len(class_names), time.time() - start)
    start = time.time()
    metrics = per_class.per_class_metrics(predictions, manifest, class_names)
    records.write_csv(output, metrics, per_class.METRICS_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, [output],
                            options)
    logging.info("wrote %s (%d rows) in %.1f s", output, len(metrics), time.time() - start)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.distribution, settings.split, settings.force):
        stage_io.write_stage_flags(settings.workdir, per_class.STAGE_DIR,
                                      per_class.METRICS_STAGE, settings.distribution,
                                   settings.flags_text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
