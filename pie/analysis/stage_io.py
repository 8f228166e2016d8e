"""Inputs and freshness of the analysis stages (per-class test, PIEs).

The analysis stages read the same things: the manifest, every member's predictions
on one distribution, and the class names. This module loads them in compact dtypes,
checks the class range, and decides whether a stage's outputs are still up to date
with its inputs, so a rerun can skip the work. No model is ever run here.
"""
import os
import re

import numpy as np
from absl import flags

from pie.analysis import pie_labels, stats
from pie.compress import recipes
from pie.io import cli, records
from pie.io.workdir import Workdir

SPLIT_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
# `<corruption>/<severity>` or a whole shifted set such as `imagenet_a`.
DISTRIBUTION_PATTERN = re.compile(r"^[A-Za-z0-9_]+(/[0-9]+)?$")


# --------------------------------------------------------------------------- flags


def define_stage_flags(flag_values=flags.FLAGS):
    """Defines the flags every analysis stage shares, into `flag_values`; safe to call
    more than once (absl refuses to define a flag twice)."""
    if "workdir" in flag_values:
        return
    flags.DEFINE_string(
        "workdir", None,
        "Workdir holding population.csv and predictions/; outputs go under it.",
        flag_values=flag_values)
    flags.DEFINE_string(
        "distribution", records.CLEAN,
        "Which predictions to analyse: 'clean' or '<corruption>/<severity>', e.g. "
        "'gaussian_noise/3'. Shifted results go to a sub-folder named after it.",
        flag_values=flag_values)
    flags.DEFINE_string(
        "split", "test", "Evaluation split whose predictions are read.", flag_values=flag_values)
    flags.DEFINE_bool(
        "force", False, "Recompute even when the outputs are up to date.", flag_values=flag_values)


def define_test_flags(flag_values=flags.FLAGS):
    """Defines the flags of the member-level tests (gen_tstatistic, subgroups): --test,
    --resamples, --resample_seed, into `flag_values`; safe to call more than once."""
    if "test" in flag_values:
        return
    flags.DEFINE_string(
        "test", "welch", "'welch' (Welch's t-test, the paper's rule), 'paired' (paired "
        "t-test, each variant member with the dense member of its seed; fails unless every "
        "variant member has one) or 'permutation' (exact when the splits are at most "
        "--resamples, else Monte-Carlo).", flag_values=flag_values)
    flags.DEFINE_integer(
        "resamples", stats.DEFAULT_RESAMPLES, "Monte-Carlo permutation splits and bootstrap resamples (the "
        "effect's 95% interval).", flag_values=flag_values)
    flags.DEFINE_integer("resample_seed", 0, "Seed of the permutation and bootstrap draws.",
                         flag_values=flag_values)


def validate_stage_args(workdir, distribution, split):
    """Raises UsageError naming the bad argument and what is allowed."""
    cli.require_workdir(workdir)
    if distribution != records.CLEAN and not DISTRIBUTION_PATTERN.match(distribution):
        raise cli.UsageError(
            f"--distribution={distribution!r} is not allowed: use 'clean', "
            "'<corruption>/<severity>' (e.g. 'gaussian_noise/3') or a set name (e.g. 'imagenet_a')")
    if not SPLIT_PATTERN.match(split or ""):
        raise cli.UsageError(
            f"--split={split!r} is not allowed: use a name of letters, digits and "
            "underscores, e.g. 'test'")


# ------------------------------------------------------------------------- classes


def load_class_names(workdir, largest_class_id):
    """Class names indexed by class id.

    From `W/classes.json` (a JSON list written by the training stage) when it
    exists; otherwise the class ids themselves, as strings, for classes
    0..largest_class_id.
    """
    path = Workdir(workdir).classes
    if not os.path.exists(path):
        return [str(c) for c in range(int(largest_class_id) + 1)]
    return records.read_class_names(path, largest_class_id)


def check_class_range(predictions, n_classes, manifest, workdir):
    """Fails on the first label or prediction outside 0..n_classes-1.

    `predictions` carries `member`, the member's row in `manifest`.
    """
    for column in ("label", "predicted"):
        values = predictions[column].to_numpy()
        bad = np.flatnonzero((values < 0) | (values >= n_classes))
        if bad.size:
            row = predictions.iloc[int(bad[0])]
            classes = Workdir(workdir).classes
            source = (f"{classes} lists {n_classes} classes"
                      if os.path.exists(classes) else
                      f"{n_classes} classes")
            member_id = manifest["member_id"].iloc[int(row["member"])]
            raise records.ContractError(
                f"{column} {int(row[column])} of image {int(row['image_id'])} "
                f"(member {member_id}) is outside the class range 0..{n_classes - 1} "
                f"({source})")


# --------------------------------------------------------------------- predictions


def population_manifest(workdir):
    """The manifest, checked to describe one dataset (populations must be comparable)."""
    manifest = records.read_manifest(workdir)
    manifest_path = Workdir(workdir).manifest
    if manifest.empty:
        raise records.ContractError(f"{manifest_path} has no members")
    datasets = sorted(manifest["dataset"].astype(str).unique())
    if len(datasets) > 1:
        raise records.ContractError(
            f"{manifest_path} mixes datasets {datasets}: populations "
            "are compared image by image, so they must share one dataset")
    dense_sparsities = manifest.loc[
        manifest["method"] == records.DENSE_METHOD, "sparsity"].unique()
    if len(dense_sparsities) > 1:
        raise records.ContractError(
            f"dense members of {manifest_path} list sparsities "
            f"{sorted(dense_sparsities)}: the dense population is one, with sparsity 0")
    recipes.check_one_per_population(manifest, manifest_path)
    return manifest


def require_dense(manifest, workdir):
    """Fails when the manifest has no dense member: variants are compared with it."""
    if not (manifest["method"] == records.DENSE_METHOD).any():
        raise records.ContractError(
            f"no dense population in {Workdir(workdir).manifest} (no member with "
            f"method == '{records.DENSE_METHOD}'): every variant is compared with it; "
            "train dense members first")


def read_compact_predictions(workdir, manifest, distribution=records.CLEAN, split="test",
                             with_image_index=False):
    """Every member's predictions in compact dtypes, with class names.

    Returns `(predictions, class_names)`. `predictions` has `member` (the
    member's row in `manifest`, in place of `member_id`), `image_id`, int32
    `label` and `predicted`, float32 `prob_predicted` and `prob_label`: 9 million
    rows take about 250 MB. `with_image_index` adds a third item, the image index
    that checking the labels built (`pie_labels.check_labels_agree`), for
    `pie_labels.Votes`.
    """
    predictions = records.read_predictions(workdir, manifest, distribution, split)
    if predictions.empty:
        folder = Workdir(workdir).predictions_dir(distribution, split)
        raise records.ContractError(
            f"the predictions of {distribution} ({folder}) have no rows: rerun "
            "pie_dataset_gen.predictions")
    largest = max(int(predictions["label"].max()), int(predictions["predicted"].max()))
    class_names = load_class_names(workdir, largest)
    check_class_range(predictions, len(class_names), manifest, workdir)
    image_index = pie_labels.check_labels_agree(predictions)
    return (predictions, class_names, image_index) if with_image_index else (
        predictions, class_names)


def eval_record_names(workdir, data_dir=None):
    """{image_id, record_key, filename} of every eval record of the data the population
    was trained on, when it is a TFRecord folder (read once, whole); None for data
    whose records have no names (embedded arrays, tfds), without loading it, and
    for a workdir without dataset.json (predictions brought from elsewhere)."""
    if not os.path.exists(Workdir(workdir).dataset_config):
        return None
    if not records.read_dataset_config(workdir)["dataset"].startswith(records.TFRECORD_PREFIX):
        return None
    from pie.data import sources  # TensorFlow, only for TFRecord data
    return sources.eval_record_names(sources.load_for_workdir(workdir, data_dir=data_dir))


# ----------------------------------------------------------------------- freshness


def stage_input_paths(workdir, manifest, distribution=records.CLEAN, split="test"):
    """The files a stage's results depend on: manifest, classes.json, predictions."""
    workdir = Workdir(workdir)
    paths = [workdir.manifest, workdir.classes]
    paths += [workdir.existing_predictions_path(member_id, distribution, split)
              for member_id in manifest["member_id"]]
    return paths


def fingerprint(workdir, paths):
    """{relative path: [size, mtime_ns]}, or None for a file that does not exist."""
    prints = {}
    for path in paths:
        key = os.path.relpath(path, workdir)
        if os.path.exists(path):
            stat = os.stat(path)
            prints[key] = [stat.st_size, stat.st_mtime_ns]
        else:
            prints[key] = None
    return prints


def is_up_to_date(workdir, stamp, inputs, outputs, options):
    """Whether `outputs` were written from exactly these inputs and options.

    The stamp written by `write_stamp` records each input's size and
    modification time, the options, and each output as written (its record:
    size, modification time, digest); any change to one of them (or a missing
    output) means the stage must run again. Nothing is hashed here.
    """
    recorded = records.read_stamp(stamp)
    if not recorded or any(not os.path.exists(output) for output in outputs):
        return False
    written = records.stamp_records(recorded)
    folder = os.path.dirname(os.path.abspath(stamp))
    return (recorded.get("inputs") == fingerprint(workdir, inputs)
            and recorded.get("options") == options
            and all(records.matches_status(output, written.get(os.path.relpath(output, folder)))
                    for output in outputs))


def write_stamp(workdir, stamp, inputs, outputs, options):
    """Records what `outputs` were computed from (written after the outputs).

    Outputs the stage recorded as it wrote them (tables: rows and digest) keep
    that record; others (a report page) are recorded here, by name relative to
    the stamp's folder.
    """
    folder = os.path.dirname(os.path.abspath(stamp))
    with records.stamp_lock(stamp):
        content = records.read_stamp(stamp)
        written = records.stamp_records(content)
        for output in outputs:
            name = os.path.relpath(output, folder)
            if os.path.exists(output) and not records.matches_status(output, written.get(name)):
                written[name] = records.file_record(output)
        content.update(inputs=fingerprint(workdir, inputs), outputs=written, options=options)
        stage = records.current_stage()
        if stage and "stage" not in content:
            content["stage"] = stage
        records.write_json(stamp, content)


def write_stage_flags(workdir, stage_dir, stage, distribution, flags_text):
    """`<stage>.flags.txt` beside a stage's outputs: the flags that produced them
    (`flags_text`: the stage's Settings.flags_text)."""
    records.write_text(Workdir(workdir).flags_file(stage_dir, stage, distribution),
                       flags_text)
