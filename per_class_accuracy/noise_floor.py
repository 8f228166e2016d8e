r"""The noise floor: what two halves of the dense population show against each other.

    python -m per_class_accuracy.noise_floor --workdir=W [--splits=20] [--split_seed=0] \
        [--test=welch|permutation] [--correction=bh|none|bh_all] [--min_errors=N] \
        [--alpha=0.05] [--ties=highest|lowest|exclude] \
        [--distribution=clean|<corruption>/<severity>] [--split=test] [--force]

Splits the dense members by seed into two disjoint halves (every balanced split when
there are at most --splits of them, else --splits seeded random ones) and runs each
half against the other through the PIE rule, the per-class test, the held-out top-1
on the images the halves disagree on, and the excess error (from
`W/robustness/accuracy.csv` when robustness_tests.analyze wrote it: `mean_corruption`
for the clean distribution, the distribution itself otherwise). Every variant is
measured at the same size on the same splits: its members of the second half's
seeds against the first half. Writes `W/noise_floor/noise_floor.csv`; columns in
docs/analysis.md. Runs no model.
"""
import os
import time

import numpy as np
from absl import flags

import pie  # noqa: F401  (the package's environment switches, before anything else)
from pie.analysis import noise_floor, per_class, pie_labels, robustness, stage_io, stats
from pie.io import cli, journal, records
from pie.io.workdir import NOISE_FLOOR_DIR, Workdir

FLAGS = flags.FLAGS
STAGE = "noise_floor"


def define_flags(flag_values=flags.FLAGS):
    """Flags of the command line only (python -m / pie), never defined on import."""
    stage_io.define_stage_flags(flag_values)
    stage_io.define_test_flags(flag_values)  # --test, --resamples, --resample_seed
    flags.adopt_module_key_flags(stage_io, flag_values=flag_values)
    per_class.define_decision_flags(flag_values)  # --correction, --min_errors
    flags.DEFINE_float("alpha", 0.05, "Significance level of the class test, in (0, 1).",
                       flag_values=flag_values)
    flags.DEFINE_string("ties", pie_labels.DEFAULT_TIES, "Tie rule of the modal labels, as "
                        "pie_dataset_gen.aggregate_predictions --ties.",
                        flag_values=flag_values)
    flags.DEFINE_integer("splits", noise_floor.MAX_SPLITS, "Every balanced split of the "
                         "dense seeds when there are at most this many, else this many "
                         "seeded random ones.", flag_values=flag_values)
    flags.DEFINE_integer("split_seed", 0, "Seed of the random splits.", flag_values=flag_values)


def shifted_distribution(distribution):
    """D' of the excess error: the mean over the corruptions for the clean analysis."""
    return robustness.MEAN_CORRUPTION if distribution == records.CLEAN else distribution


def read_accuracy(workdir, manifest, shifted):
    """{distribution: top-1 per manifest row} for clean and `shifted`, or None when
    robustness_tests.analyze has not written them."""
    path = Workdir(workdir).file("robustness_accuracy")
    if not os.path.exists(path):
        return None
    accuracy = records.read_csv(path, ["member_id", "distribution", "top1"],
                                dtype={"member_id": str, "distribution": str})
    found = {}
    for name in (records.CLEAN, shifted):
        rows = accuracy[accuracy["distribution"] == name].set_index("member_id")["top1"]
        values = rows.reindex(manifest["member_id"]).to_numpy(np.float64)
        if np.isfinite(values).all():
            found[name] = values
    return found if len(found) == 2 else None


def member_matrix(predictions, image_index, n_members):
    """Predicted labels as a members x images array, and each image's label."""
    _, image, label_of_image = image_index
    predicted = np.full((n_members, len(label_of_image)), -1, np.int32)
    predicted[predictions["member"].to_numpy(), image] = predictions["predicted"].to_numpy()
    if (predicted < 0).any():
        raise records.ContractError("every member must predict every eval image")
    return predicted, label_of_image


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, distribution=records.CLEAN, split="test", force=False, test="welch",
        alpha=0.05, correction=stats.DEFAULT_CORRECTION, min_errors=None,
        ties=pie_labels.DEFAULT_TIES, splits=noise_floor.MAX_SPLITS, split_seed=0,
        resamples=stats.DEFAULT_RESAMPLES, resample_seed=0):
    """Writes the noise floor table; returns False when it was up to date."""
    stage_io.validate_stage_args(workdir, distribution, split)
    noise_floor.validate_options(test, splits, ties)
    per_class.validate_test_options(alpha, correction, test, resamples, min_errors,
                                    resample_seed)
    manifest = stage_io.population_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    wd = Workdir(workdir)
    output = wd.file("noise_floor", distribution)
    stamp = wd.stamp(NOISE_FLOOR_DIR, STAGE, distribution)
    shifted = shifted_distribution(distribution)
    inputs = stage_io.stage_input_paths(workdir, manifest, distribution, split) + [
        wd.file("robustness_accuracy")]
    options = {"distribution": distribution, "split": split, "test": test, "alpha": alpha,
               "correction": correction, "min_errors": min_errors, "ties": ties,
               "splits": splits, "split_seed": split_seed, "resamples": resamples,
               "resample_seed": resample_seed}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, [output], options):
        print(f"noise_floor: {output} up to date, skipping (--force to redo)", flush=True)
        return False
    started = time.time()
    predictions, class_names, image_index = stage_io.read_compact_predictions(
        workdir, manifest, distribution, split, with_image_index=True)
    predicted, labels = member_matrix(predictions, image_index, len(manifest))
    del predictions
    accuracy = read_accuracy(workdir, manifest, shifted)
    population = noise_floor.Population(predicted, labels, manifest, len(class_names),
                                        accuracy)
    table = noise_floor.noise_floor(
        population, distribution, test, alpha, correction, min_errors, ties, splits,
        split_seed, resamples, resample_seed, shifted if accuracy else None)
    records.write_csv(output, table, noise_floor.NOISE_FLOOR_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, [output], options)
    print(f"noise_floor: wrote {output} ({table['splits'].max()} splits of "
          f"{table['members_per_half'].max()} + {table['members_per_half'].max()} dense "
          f"members, {time.time() - started:.1f} s)", flush=True)
    for line in summary_lines(table):
        print(f"  {line}", flush=True)
    return True


def summary_lines(table):
    """One line per variant: each finding beside its floor."""
    lines = []
    for (method, sparsity), rows in table.groupby(["method", "sparsity"], sort=False):
        if rows["note"].str.startswith("n/a").all():
            lines.append(f"{records.variant_key(method, sparsity)}: {rows['note'].iloc[0]}")
            continue
        cells = [f"{row.measure} {row.variant_value:.4g} (floor {row.floor_mean:.4g}, "
                 f"q95 {row.floor_q95:.4g}{', above' if row.exceeds_floor else ''})"
                 for row in rows.itertuples()]
        lines.append(f"{records.variant_key(method, sparsity)}: " + "; ".join(cells))
    return lines


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.distribution, settings.split, settings.force,
           settings.test, settings.alpha, settings.correction, settings.min_errors,
           settings.ties, settings.splits, settings.split_seed, settings.resamples,
           settings.resample_seed):
        stage_io.write_stage_flags(settings.workdir, NOISE_FLOOR_DIR, STAGE,
                                   settings.distribution, settings.flags_text)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
