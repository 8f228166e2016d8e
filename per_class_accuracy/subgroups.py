r"""Subgroup analysis: which groups of images a compressed variant hurts most.

    python -m per_class_accuracy.subgroups --workdir=W --groups_csv=F [--group_attributes=a,b]
    python -m per_class_accuracy.subgroups --workdir=W --group_attributes=Male,Young  # celeb_a
        [--test=welch|paired|permutation] [--correction=bh|none|bh_all] [--min_errors=N]
        [--resamples=9999] [--resample_seed=0]
        [--distribution=clean|<corruption>/<severity>] [--split=test] [--force]

Groups come from a CSV (`image_id` plus one column per attribute; all columns
unless --group_attributes picks some) or from the dataset's own per-image
attributes (tfds celeb_a). Writes `W/per_class/subgroups.csv`: one row per variant
x attribute x group with the dense and variant error, false positive and false
negative rates (binary tasks), their change relative to the overall change, the
PIE rate (from `W/pie/pie.csv`; NaN with a warning when it is absent), the test
across members (--test, Welch's by default), the effect with the interval that
inverts the test, the multiple-testing rule (--correction, Benjamini-Hochberg per
variant by default) and `ceiling` groups (fewer errors than --min_errors, not
tested). Definitions in docs/subgroups.md.
"""
import os
import time

from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.analysis import stage_io
from pie.io import cli, journal, records
from pie.io.workdir import Workdir
from pie.analysis import per_class, stats, subgroups

STAGE = "subgroups"

FLAGS = flags.FLAGS


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    stage_io.define_stage_flags(flag_values)
    stage_io.define_test_flags(flag_values)  # --test, --resamples, --resample_seed
    per_class.define_decision_flags(flag_values)  # --correction, --min_errors
    # The shared flags show in --help.
    flags.adopt_module_key_flags(stage_io, flag_values=flag_values)
    flags.DEFINE_string("groups_csv", None,
                        "CSV with 'image_id' and one column per attribute (one row per eval "
                        "image); without it, the dataset's own attributes (tfds celeb_a).",
                        flag_values=flag_values)
    flags.DEFINE_string("group_attributes", None,
                        "Comma-separated attribute names (columns of --groups_csv, or e.g. "
                        "Male,Young for celeb_a). Default with --groups_csv: every column.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets folder, if not the one "
                        "trained with (for the dataset's own attributes).",
                        flag_values=flag_values)


def attribute_names(text):
    if not text:
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise cli.UsageError("--group_attributes is empty")
    if len(set(names)) != len(names):
        raise cli.UsageError(f"--group_attributes has duplicates: '{text}'")
    return names


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, groups_csv=None, attributes=(), distribution=records.CLEAN, split="test",
        force=False, data_dir=None, test="welch", resamples=stats.DEFAULT_RESAMPLES,
        resample_seed=0, correction=stats.DEFAULT_CORRECTION, min_errors=None, flags_text=""):
    """Writes the subgroups table; returns False when it was up to date. `flags_text`:
    the command line's flags, saved beside the table."""
    stage_io.validate_stage_args(workdir, distribution, split)
    per_class.validate_test_options(subgroups.ALPHA, correction, test, resamples,
                                    min_errors, resample_seed)
    manifest = stage_io.population_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    wd = Workdir(workdir)
    output = subgroups.subgroups_path(workdir, distribution)
    stamp = wd.stamp(subgroups.STAGE_DIR, STAGE, distribution)
    inputs = stage_io.stage_input_paths(workdir, manifest, distribution, split) + [
        subgroups.pie_path(workdir, distribution),
        os.path.abspath(groups_csv) if groups_csv else wd.dataset_config]
    options = {"distribution": distribution, "split": split, "attributes": list(attributes),
               "groups_csv": os.path.abspath(groups_csv) if groups_csv else None,
               "test": test, "resamples": resamples, "resample_seed": resample_seed,
               "correction": correction, "min_errors": min_errors}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, [output],
                                               options):
        print(f"{output} up to date, skipping (--force to redo)", flush=True)
        return False
    started = time.time()
    groups = subgroups.load_groups(workdir, groups_csv, attributes, data_dir)
    predictions, class_names = stage_io.read_compact_predictions(
        workdir, manifest, distribution, split)
    subgroups.check_coverage(groups, predictions["image_id"].to_numpy(),
                             f"groups file {groups_csv}" if groups_csv else "the attributes")
    pie_frame = subgroups.read_pie(workdir, distribution)
    table = subgroups.subgroup_table(predictions, manifest, groups,
                                     binary=len(class_names) == 2, pie=pie_frame,
                                     test=test, resamples=resamples, seed=resample_seed,
                                     correction=correction, min_errors=min_errors)
    if pie_frame is not None:
        missing = subgroups.missing_pie_variants(table)
        if missing:
            print(f"warning: {subgroups.pie_path(workdir, distribution)} has no rows for "
                  f"{', '.join(missing)}: their PIE columns are NaN; rerun "
                  "pie_dataset_gen.aggregate_predictions", flush=True)
    counts = manifest.groupby(["method", "sparsity"]).size()
    for (method, sparsity), n_members in counts.items():
        if n_members < stats.SMALL_POPULATION:
            print(f"warning: {records.variant_key(method, sparsity)} has {n_members} members "
                  f"(< {stats.SMALL_POPULATION}): its tests have little power", flush=True)
    records.write_csv(output, table, subgroups.SUBGROUP_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, [output], options)
    stage_io.write_stage_flags(workdir, subgroups.STAGE_DIR, STAGE, distribution, flags_text)
    n_groups = table[["attribute", "group"]].drop_duplicates().shape[0] if len(table) else 0
    print(f"wrote {output}: {table[['method', 'sparsity']].drop_duplicates().shape[0]} "
          f"variants x {n_groups} groups ({time.time() - started:.1f}s)", flush=True)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    attributes = attribute_names(settings.group_attributes)
    run(settings.workdir, settings.groups_csv, attributes, settings.distribution, settings.split,
        settings.force, settings.data_dir, settings.test, settings.resamples, settings.resample_seed,
        correction=settings.correction, min_errors=settings.min_errors,
        flags_text=settings.flags_text)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
