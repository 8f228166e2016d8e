"""Pruning Identified Exemplars: images where a variant's modal label differs.

    python -m pie_dataset_gen.aggregate_predictions --workdir=W \
        [--ties=highest|lowest|exclude] \
        [--distribution=clean|<corruption>/<severity>] [--split=test] [--force]

For every population and eval image, the modal (most frequent) predicted label of
its members, ties flagged and broken by --ties (default: toward the highest class
id, as the original code); an image is a PIE of a compressed variant when the
variant's modal label differs from the dense population's (Hooker et al.; the true
label is not used). Top-1 on the PIEs is given in-sample and held out (PIEs chosen
without one seed, scored on that seed's members, averaged over seeds). Writes
`W/pie/pie.csv` (one row per variant x image) and `W/pie/pie_summary.csv` (one row
per variant); columns in docs/analysis.md. For TFRecord data each row names the
image's record (`record_key`, `filename`), read from the data once.
"""
import time

from absl import flags
from absl import logging

from pie.analysis import stage_io
from pie.io import cli, journal
from pie.analysis import pie_labels, stats
from pie.io import records
from pie.io.workdir import PIE_DIR, Workdir


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    stage_io.define_stage_flags(flag_values)
    # The shared flags show in --help.
    flags.adopt_module_key_flags(stage_io, flag_values=flag_values)
    flags.DEFINE_string(
        "ties", pie_labels.DEFAULT_TIES, "How a tied modal label is broken: 'highest' class "
        "id (as the original code), 'lowest', or 'exclude' (a tied image is never a PIE and "
        "is left out of the PIE and non-PIE top-1).", flag_values=flag_values)


FLAGS = flags.FLAGS
STAGE = "aggregate_predictions"
STAGE_DIR = PIE_DIR


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, distribution=records.CLEAN, split="test", force=False,
        ties=pie_labels.DEFAULT_TIES):
    """Writes the PIE tables; returns False when they were up to date."""
    stage_io.validate_stage_args(workdir, distribution, split)
    pie_labels.validate_ties(ties)
    manifest = stage_io.population_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    wd = Workdir(workdir)
    stamp = wd.stamp(STAGE_DIR, STAGE, distribution)
    outputs = [wd.file("pie", distribution), wd.file("pie_summary", distribution)]
    inputs = stage_io.stage_input_paths(workdir, manifest, distribution, split)
    # The columns too: a pie.csv written with other columns is written again.
    options = {"distribution": distribution, "split": split, "ties": ties,
               "columns": pie_labels.PIE_COLUMNS}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs,
                                               options):
        logging.info("%s up to date, skipping (--force to redo)", " and ".join(outputs))
        return False

    start = time.time()
    predictions, class_names, image_index = stage_io.read_compact_predictions(
        workdir, manifest, distribution, split, with_image_index=True)
    logging.info("read %d predictions of %d members in %.1f s", len(predictions),
                 len(manifest), time.time() - start)
    start = time.time()
    votes = pie_labels.Votes(predictions, manifest, len(class_names), image_index)  # counted once
    modal = pie_labels.population_modal_labels(predictions, manifest, len(class_names),
                                               ties, votes)
    names = stage_io.eval_record_names(workdir)  # where each image is in the data
    table, summary = pie_labels.pie_table(modal, ties, names)
    del modal
    heldout = pie_labels.heldout_top1(predictions, manifest, len(class_names), ties, votes)
    del predictions, votes
    summary = pie_labels.with_heldout(summary, heldout)
    records.write_csv(outputs[0], table, pie_labels.PIE_COLUMNS)
    records.write_csv(outputs[1], summary, pie_labels.SUMMARY_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    logging.info("wrote %s (%d PIEs over %d variants x images) in %.1f s", outputs[0],
                 int(table["is_pie"].sum()), len(table), time.time() - start)
    sizes = manifest.groupby(["method", "sparsity"]).size()
    for (method, sparsity), n_members in sizes.items():
        if n_members < stats.SMALL_POPULATION:
            logging.warning("%s has %d members (< %d): its modal labels are often tied, "
                            "and its tests have little power",
                            records.variant_key(method, sparsity), n_members,
                            stats.SMALL_POPULATION)
    for row in summary.itertuples():
        if row.n_pie:
            logging.info("%s: %d PIEs, %.0f%% of them decided by a tie",
                         records.variant_key(row.method, row.sparsity), row.n_pie,
                         100 * row.pie_tied_share)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.distribution, settings.split, settings.force, settings.ties):
        stage_io.write_stage_flags(settings.workdir, STAGE_DIR, STAGE, settings.distribution,
                                   settings.flags_text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
