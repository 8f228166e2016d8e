r"""Accuracy, excess error and prune potential under distribution shift.

  python -m robustness_tests.analyze --workdir=W [--delta=0.5] [--monotone] [--force]

Reads every manifest member's predictions file under `W/predictions/test/*/`
(clean ones from pie_dataset_gen.predictions, shifted ones from
robustness_tests.corruptions). A file's distribution is its `distribution`
column (files without one are clean predictions); the folder is only where it
lies. Writes, under `W/robustness/`:

  accuracy.csv          top-1 per member and distribution, plus `mean_corruption` and,
                        with several severities, `mean_severity_<k>`
  excess_error.csv      per variant and shifted distribution (mean, std over seeds)
  excess_error_per_seed.csv
  prune_potential.csv   per pruning method and distribution
  excess_error_fit.csv  per pruning method and distribution: excess error against
                        prune ratio, a line through the origin, 95% interval with each
                        seed's points as one cluster
  prune_potential_summary.csv  per pruning method: mean +- std over seeds, clean
                        and over the shifted distributions (mean, minimum), and the
                        per-seed clean - shifted differences with a paired t-test

Definitions in docs/robustness.md (Liebenwein et al., Lost in Pruning). Runs no
model. A rerun with the same inputs and --delta skips.
"""
import math
import os

import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (the package's environment switches, before anything else)
from pie.analysis import robustness, stage_io
from pie.compress import recipes
from pie.io import cli, journal, records
from pie.io.workdir import ROBUSTNESS_DIR, Workdir
from pie.io.progress import Progress

FLAGS = flags.FLAGS
STAGE = "analyze"
OUT_DIR = ROBUSTNESS_DIR
SPLIT = "test"
DECIMALS = 10
OUTPUT_FILES = ("robustness_accuracy", "excess_error", "excess_error_per_seed", "prune_potential",
                "excess_error_fit", "prune_potential_summary")


def define_flags(flag_values=flags.FLAGS):
    """Flags of the stage script (not defined on import: tests import several stages)."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv and predictions/.",
                        flag_values=flag_values)
    flags.DEFINE_float("delta", 0.5, "Prune potential tolerance: percentage points of error "
                       "above the dense population's, >= 0 (the paper: 0.5).",
                       flag_values=flag_values)
    flags.DEFINE_bool("monotone", False, "Prune potential: a sparsity passes only when every "
                      "lower sparsity of the method passes too (default: the largest "
                      "passing sparsity, whatever the lower ones do).", flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Recompute even when the outputs are up to date.",
                      flag_values=flag_values)


def prediction_files(workdir, manifest, split=SPLIT):
    """(member_id, path) of every manifest member's file in every predictions folder."""
    workdir = Workdir(workdir)
    pairs = [(member_id, workdir.existing_predictions_path(member_id, os.path.basename(folder),
                                                           split))
             for folder in workdir.prediction_folders(split)
             for member_id in manifest["member_id"]]
    return [(member_id, path) for member_id, path in pairs if os.path.exists(path)]


def file_distribution(member_id, path):
    """The distribution one predictions file claims (its `distribution` column)."""
    frame = records.read_prediction_file(path, ["member_id"], optional=["distribution"])
    if frame.empty:
        raise records.ContractError(f"{path} has no rows")
    if (frame["member_id"] != member_id).any():
        raise records.ContractError(f"{path} holds rows of another member than {member_id}")
    distribution = records.CLEAN
    if "distribution" in frame:
        values = frame["distribution"].astype(str).unique()
        if len(values) != 1:
            raise records.ContractError(
                f"{path} mixes distributions {sorted(values)[:3]}: one file, one distribution")
        distribution = values[0]
    if robustness.is_mean([distribution])[0]:
        raise records.ContractError(
            f"{path} claims distribution '{distribution}', a name this stage reserves")
    return distribution


def folder_accuracy(workdir, manifest, folder, found, split=SPLIT):
    """Rows (member_id, distribution, top1, n_images, path) of one predictions folder.

    The folder is read by the analysis stages' checked reader
    (stage_io.read_compact_predictions): every manifest member has a file, all on
    the same images without duplicate ids, labels in the class range and agreeing.
    """
    have = {member_id for member_id, _ in found}
    missing = [member_id for member_id in manifest["member_id"] if member_id not in have]
    distributions = {file_distribution(member_id, path) for member_id, path in found}
    if len(distributions) != 1:
        raise records.ContractError(
            f"the predictions in {os.path.dirname(found[0][1])} claim distributions "
            f"{sorted(distributions)[:3]}: one folder, one distribution")
    distribution = distributions.pop()
    if missing:
        writer = ("pie_dataset_gen.predictions" if distribution == records.CLEAN
                  else "robustness_tests.corruptions")
        raise records.ContractError(
            f"no predictions for member {missing[0]} on {distribution} in "
            f"{os.path.dirname(found[0][1])} ({len(missing)} of {len(manifest)} members "
            f"missing): run {writer} for them")
    predictions, _ = stage_io.read_compact_predictions(workdir, manifest, folder, split)
    member = predictions["member"].to_numpy()
    correct = predictions["predicted"].to_numpy() == predictions["label"].to_numpy()
    counts = np.bincount(member, minlength=len(manifest))
    top1 = np.bincount(member, weights=correct, minlength=len(manifest)) / counts
    paths = dict(found)
    return [(member_id, distribution, float(top1[position]), int(counts[position]),
             paths[member_id])
            for position, member_id in enumerate(manifest["member_id"])]


def read_accuracy(workdir, files, manifest):
    """Top-1 per (member, distribution) from the files; fails on duplicate sources."""
    by_folder = {}
    for member_id, path in files:
        folder = os.path.basename(os.path.dirname(path))
        by_folder.setdefault(folder, []).append((member_id, path))
    progress = Progress(len(files), "files")
    rows = []
    for folder, found in by_folder.items():
        rows += folder_accuracy(workdir, manifest, folder, found)
        progress.advance(len(found), f"read {rows[-1][1]}")
    accuracy = pd.DataFrame(rows, columns=["member_id", "distribution", "top1", "n_images",
                                           "path"])
    twice = accuracy[accuracy.duplicated(["member_id", "distribution"], keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        paths = twice.loc[(twice["member_id"] == first["member_id"])
                          & (twice["distribution"] == first["distribution"]), "path"]
        raise records.ContractError(
            f"member {first['member_id']} has more than one predictions file for "
            f"{first['distribution']}: {', '.join(paths)}")
    info = manifest[["member_id", "method", "sparsity", "seed"]]
    return accuracy.drop(columns="path").merge(info, on="member_id", how="left",
                                               validate="many_to_one")


def rounded(frame):
    """Float columns to 10 decimals: errors are differences of counts, and the last
    digits are only float rounding (3.9000000000000035 percentage points)."""
    floats = frame.select_dtypes("float").columns
    # (+ 0.0 turns a rounded -0.0 into 0.0)
    return frame.assign(**{column: frame[column].round(DECIMALS) + 0.0 for column in floats})


def check_inputs(workdir, delta):
    cli.require_workdir(workdir)
    if not (math.isfinite(delta) and delta >= 0):
        raise cli.UsageError(f"--delta must be a finite number >= 0 (percentage points), "
                             f"got {delta}")


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, delta=0.5, force=False, monotone=False):
    """Writes the robustness tables; returns False when they were up to date."""
    check_inputs(workdir, delta)
    manifest = records.read_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    recipes.check_one_per_population(manifest, Workdir(workdir).manifest)
    files = prediction_files(workdir, manifest)
    wd = Workdir(workdir)
    clean_dir = wd.predictions_dir(records.CLEAN, SPLIT)
    out_dir = wd.folder(OUT_DIR)
    stamp = wd.stamp(OUT_DIR, STAGE)
    outputs = [wd.file(key) for key in OUTPUT_FILES]
    inputs = [wd.manifest] + [path for _, path in files]
    options = {"delta": float(delta), "split": SPLIT, "monotone": bool(monotone)}
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs, options):
        print(f"analyze: {out_dir} up to date with {len(files)} predictions files, "
              "skipping (--force to redo)", flush=True)
        return False
    print(f"analyze: {len(files)} predictions files of {len(manifest)} members", flush=True)
    accuracy = read_accuracy(workdir, files, manifest)
    if not (accuracy["distribution"] == records.CLEAN).any():
        raise records.ContractError(
            f"no clean predictions of the manifest members (e.g. {clean_dir}): run "
            "pie_dataset_gen.predictions first")
    dense_clean = (accuracy["method"] == records.DENSE_METHOD) & (
        accuracy["distribution"] == records.CLEAN)
    if not dense_clean.any():
        raise records.ContractError(
            "the dense population has no clean predictions: run pie_dataset_gen.predictions")
    accuracy = robustness.with_mean_corruption(accuracy)
    per_seed, excess = robustness.excess_error(accuracy)
    potential = robustness.prune_potential(accuracy, delta, monotone)
    headline = robustness.prune_potential_summary(accuracy, delta, monotone)
    records.write_csv(outputs[0], rounded(accuracy), robustness.ACCURACY_COLUMNS)
    records.write_csv(outputs[1], rounded(excess), robustness.EXCESS_ERROR_COLUMNS)
    records.write_csv(outputs[2], rounded(per_seed), robustness.EXCESS_ERROR_SEED_COLUMNS)
    records.write_csv(outputs[3], rounded(potential), robustness.PRUNE_POTENTIAL_COLUMNS)
    records.write_csv(outputs[4], rounded(robustness.excess_error_fit(per_seed)),
                      robustness.EXCESS_ERROR_FIT_COLUMNS)
    records.write_csv(outputs[5], rounded(headline), robustness.PRUNE_POTENTIAL_SUMMARY_COLUMNS)
    stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    distributions = accuracy["distribution"].unique()
    print(f"analyze: {len(distributions)} distributions "
          f"({int(robustness.is_corruption(distributions).sum())} corruptions); "
          f"wrote {', '.join(os.path.basename(path) for path in outputs)} to {out_dir}",
          flush=True)
    for row in headline.itertuples(index=False):  # a few summary lines, not data work
        print(f"  prune potential {row.method} (mean +- std over {row.n_seeds} seeds): clean "
              f"{row.clean_mean:.3g} +- {row.clean_std:.3g}, shifted mean "
              f"{row.shifted_mean:.3g} +- {row.shifted_std:.3g}, min {row.shifted_min:.3g}"
              + (f" ({row.shifted_min_distribution})" if row.n_shifted else ""), flush=True)
        if row.n_paired_seeds:
            print(f"    clean - shifted per seed {row.differences_per_seed}: mean "
                  f"{row.difference_mean:+.3g}, 95% interval {row.difference_ci_low:+.3g} to "
                  f"{row.difference_ci_high:+.3g}, paired t-test p = "
                  f"{row.difference_p_value:.3g}, shifted lower for "
                  f"{row.n_seeds_lower_shifted} of {row.n_paired_seeds} seeds"
                  + (" (approximate: few seeds)" if row.ci_approximate else ""), flush=True)
    return True


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.delta, settings.force, settings.monotone):
        stage_io.write_stage_flags(settings.workdir, OUT_DIR, STAGE, records.CLEAN,
                                   settings.flags_text)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
