r"""Do compressed and dense members rely on the same input features?

  python -m robustness_tests.informative_features --workdir=W \
      [--method=gradient|sis|ranking] [--sis_threshold=0.9] [--patch=1] [--images=200] \
      [--fraction=0.1] [--seed=0] [--batch_size=256] [--shard=i/n]

Per image and member, the informative features are chosen by `--method`:

  sis       Carter et al.'s sufficient input subset (pie.analysis.sis): backward
            selection removes one feature (a pixel across channels, or a --patch x
            --patch square) at a time, always the one whose removal keeps the
            member's confidence in its own prediction highest; the SIS is the
            smallest set of last-removed features that alone keeps that confidence
            >= --sis_threshold. An image whose whole input is below it has no SIS
            (`has_sis` false, counted in `no_sis`). F (F + 1) / 2 batched forward
            passes per image of F features.
  ranking   Lost in Pruning's script: the same backward selection at threshold 0,
            and the last-removed `fraction` of the features.
  gradient  the proxy: the `fraction` of input elements (pixel x channel) with the
            largest |input x gradient of the member's predicted logit|
            (tf.GradientTape, batched), one backward pass per image.

For each compressed member and the dense member of the
same seed, and for two independently trained dense members (`dense_reference`):
the IoU of their feature masks, and each model's confidence, the softmax
probability of the class it predicts on the whole image, when its input keeps only
its own or only the other model's features (every other feature set to 0 in
normalised input units).
Writes `W/robustness/informative_features.csv` and
`informative_features_per_image.csv`; columns in docs/robustness.md (the summary
names the selection method and patch). Members without a Keras model (TFLite) are
skipped. `--shard=i/n` runs the pairs of manifest members i, i+n, ... (and their
dense references) only; n shards may run at once, and the last to finish writes the
tables from every shard's rows (pie.io.shards).
"""
import time

import numpy as np
import pandas as pd
from absl import flags

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.analysis import robustness, sis, stage_io
from pie.io import cli, journal, records, shards
from pie.io.workdir import ROBUSTNESS_DIR, Workdir
from pie.io.progress import Progress
from pie.models import predict
from robustness_tests import noise_similarity

FLAGS = flags.FLAGS
STAGE = "informative_features"
OUT_DIR = ROBUSTNESS_DIR
# The value a removed feature takes, in normalised input units.
BASELINE = 0.0
# How the informative features are chosen (--method).
SELECTIONS = ("gradient", "sis", "ranking")
BACKWARD_SELECTIONS = ("sis", "ranking")
# Carter et al. choose tau per application; 0.9: the subset alone must make the
# member confident, and most members reach it on most images (docs/robustness.md).
DEFAULT_SIS_THRESHOLD = 0.9
# Its tables' columns: pie.analysis.sis (the report reads them too).
SUMMARY_COLUMNS = sis.INFORMATIVE_FEATURES_COLUMNS
PER_IMAGE_COLUMNS = sis.INFORMATIVE_FEATURES_PER_IMAGE_COLUMNS


def define_flags(flag_values=flags.FLAGS):
    """Flags of the stage script (not defined on import: tests import several stages)."""
    flags.DEFINE_string("workdir", None, "Workdir holding population.csv and dataset.json.",
                        flag_values=flag_values)
    flags.DEFINE_string("method", "gradient", "How informative features are chosen: sis "
                        "(Carter et al.'s sufficient input subset at --sis_threshold), ranking "
                        "(Lost in Pruning: backward selection at threshold 0, the last-removed "
                        "--fraction) or gradient (|input x gradient| proxy, fast).",
                        flag_values=flag_values)
    flags.DEFINE_float("sis_threshold", DEFAULT_SIS_THRESHOLD, "sis: tau in [0, 1], the "
                       "confidence in the predicted class the subset alone must keep.",
                       flag_values=flag_values)
    flags.DEFINE_integer("patch", 1, "sis: features are patch x patch squares of pixels "
                         "(all channels); must divide the image's height and width.",
                         flag_values=flag_values)
    flags.DEFINE_integer("images", 200, "Eval images used (>= 1; all when larger than the "
                         "split), a seeded random subset.", flag_values=flag_values)
    flags.DEFINE_float("fraction", 0.1, "Share of input features kept as informative, in "
                       "(0, 1].", flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the image subset (>= 0).", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 256, "Images per gradient / model call.",
                         flag_values=flag_values)
    flags.DEFINE_bool("force", False, "Recompute even when the outputs are up to date.",
                      flag_values=flag_values)
    shards.define_flag(flag_values)


def check_arguments(workdir, images, fraction, seed, batch_size, method="gradient", patch=1,
                    sis_threshold=DEFAULT_SIS_THRESHOLD):
    cli.require_workdir(workdir)
    if method not in SELECTIONS:
        raise cli.UsageError(f"unknown --method '{method}'; allowed: {', '.join(SELECTIONS)}")
    try:
        sis.check_threshold(sis_threshold)
    except ValueError:
        raise cli.UsageError(f"--sis_threshold must be in [0, 1], got {sis_threshold}") from None
    if patch < 1:
        raise cli.UsageError(f"--patch must be >= 1, got {patch}")
    if method == "gradient" and patch != 1:
        raise cli.UsageError("--patch applies to --method=sis and ranking only: the gradient "
                             "proxy ranks single input elements")
    if not 0 < fraction <= 1:
        raise cli.UsageError(f"--fraction must be in (0, 1], got {fraction}")
    for name, value, least in (("images", images, 1), ("seed", seed, 0),
                               ("batch_size", batch_size, 1)):
        if value < least:
            raise cli.UsageError(f"--{name} must be >= {least}, got {value}")


def saliency(model, inputs, batch_size):
    """(predicted labels, |input x d predicted logit / d input|) of a Keras model."""
    import tensorflow as tf
    labels, scores = [], []
    for start in range(0, len(inputs), batch_size):
        batch = tf.constant(inputs[start:start + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(batch)
            logits = model(batch, training=False)
            predicted = tf.argmax(logits, axis=1)
            # Each image's logit depends on its own input only, so the gradient of
            # the sum is every image's own gradient.
            chosen = tf.reduce_sum(tf.gather(logits, predicted, axis=1, batch_dims=1))
        gradient = tape.gradient(chosen, batch)
        labels.append(predicted.numpy())
        scores.append(np.abs((batch * gradient).numpy()))
    return np.concatenate(labels), np.concatenate(scores)


def predicted_class_confidence(member, inputs, masks, predicted, batch_size):
    """Softmax probability of `predicted` (the member's class on the whole image) with
    only the masked features kept."""
    kept = np.where(masks.reshape(inputs.shape), inputs, np.float32(BASELINE))
    probs = predict.softmax(np.asarray(member.logits(kept, batch_size), np.float64))
    return probs[np.arange(len(predicted)), predicted]


def predicted_classes(member, inputs, batch_size):
    """The class each image gets from the member on the whole input."""
    return np.asarray(member.logits(inputs, batch_size)).argmax(axis=1)


def check_patch(sample_shape, patch):
    """The feature groups of --patch on these inputs; a usage error when it does not fit."""
    try:
        return sis.feature_groups(sample_shape, patch)
    except ValueError as error:
        raise cli.UsageError(f"--{error}") from None


def select_features(model, x, method, fraction, batch_size, groups, n_features,
                    sis_threshold=DEFAULT_SIS_THRESHOLD):
    """((N, d) element masks of each image's informative features for one model,
    (N,) whether the image has them: False only under sis, below the threshold)."""
    if method in BACKWARD_SELECTIONS:
        selection = sis.backward_selection(sis.keras_predict_proba(model, batch_size), x,
                                           groups, n_features, BASELINE)
        if method == "ranking":
            return sis.selected_masks(selection.order, groups, fraction), np.ones(len(x), bool)
        chosen, has_sis = sis.sufficient_subsets(selection, sis_threshold)
        return chosen[:, groups], has_sis
    _, scores = saliency(model, x, batch_size)
    return robustness.top_feature_masks(scores, fraction), np.ones(len(x), bool)


@journal.forced  # with force=True, outputs change only when the run succeeds
def run(workdir, images=200, fraction=0.1, seed=0, batch_size=256, force=False,
        method="gradient", patch=1, sis_threshold=DEFAULT_SIS_THRESHOLD,
        shard=shards.UNSHARDED):
    """Writes the informative-feature tables; returns False when they were up to date (or
    another shard writes them)."""
    check_arguments(workdir, images, fraction, seed, batch_size, method, patch, sis_threshold)
    manifest = records.read_manifest(workdir)
    stage_io.require_dense(manifest, workdir)
    keras_rows = manifest[manifest["model_file"].astype(str).str.endswith(".keras")]
    skipped = sorted(set(manifest["member_id"]) - set(keras_rows["member_id"]))
    if skipped:
        print(f"informative_features: skipping {len(skipped)} members without a Keras model "
              f"(no gradients): {', '.join(skipped[:5])}", flush=True)
    predict.check_model_files(workdir, keras_rows)
    pairs, rows, inputs = robustness.pairs_to_run(workdir, keras_rows)
    wd = Workdir(workdir)
    stamp = wd.stamp(OUT_DIR, STAGE)
    outputs = [wd.file("informative_features"), wd.file("informative_features_per_image")]
    threshold = float(sis_threshold) if method == "sis" else float("nan")
    options = {"images": images, "fraction": float(fraction), "seed": seed,
               "baseline": BASELINE, "method": method, "patch": patch,
               "sis_threshold": None if method != "sis" else threshold}
    from pie.data import sources
    groups, n_features = check_patch(sources.load_for_workdir(workdir).input_shape, patch)
    if method == "gradient":  # every input element is a feature of its own
        n_features = len(groups)
    if not force and stage_io.is_up_to_date(workdir, stamp, inputs, outputs, options):
        print(f"informative_features: {outputs[0]} up to date, skipping (--force to redo)",
              flush=True)
        return False
    # This shard's pairs: those of its manifest members, with their references.
    pair_order = list(pairs["member_id"])
    own = {row["member_id"] for row in shards.select(manifest.to_dict("records"), shard)}
    pairs = pairs[pairs["member_id"].isin(own)]
    rows = rows[rows["member_id"].isin(set(pairs["member_id"]) | set(pairs["reference_id"]))]
    x, labels, ids = noise_similarity.eval_subset(workdir, images, seed)
    chosen = (f"the sufficient input subset at threshold {threshold:g}" if method == "sis"
              else f"top {fraction:g}")
    print(f"informative_features: {method}, {len(pairs)} pairs of {len(rows)} members"
          f"{shards.describe(shard)}, {len(x)} images, {chosen} of {n_features} features",
          flush=True)
    members, masks, found, predicted, own, kept = {}, {}, {}, {}, {}, {}
    progress = Progress(len(rows) + len(pairs), "members and pairs")
    for row in rows.to_dict("records"):
        started = time.time()
        member_id = row["member_id"]
        member = predict.load_member(workdir, row)
        member.check_input(x.shape[1:])  # saliency reads the model before logits would
        members[member_id] = member
        masks[member_id], found[member_id] = select_features(
            member.model, x, method, fraction, batch_size, groups, n_features, sis_threshold)
        kept[member_id] = features_kept(masks[member_id], groups, method)
        predicted[member_id] = predicted_classes(member, x, batch_size)
        own[member_id] = np.where(found[member_id], predicted_class_confidence(
            member, x, masks[member_id], predicted[member_id], batch_size), np.nan)
        note = (f", {int((~found[member_id]).sum())} images without an SIS"
                if method == "sis" else "")
        progress.advance(1, f"{member_id}: features and own-mask confidence "
                            f"({time.time() - started:.1f}s){note}")
    per_image = []
    for pair in pairs.to_dict("records"):
        first, second = pair["member_id"], pair["reference_id"]
        both = found[first] & found[second]
        per_image.append(pd.DataFrame({
            **{key: pair[key] for key in ("method", "sparsity", "seed", "member_id",
                                          "reference_id")},
            "image_id": ids, "label": labels,
            "predicted": predicted[first], "reference_predicted": predicted[second],
            "has_sis": found[first], "reference_has_sis": found[second],
            "features_kept": np.where(found[first], kept[first], np.nan),
            "reference_features_kept": np.where(found[second], kept[second], np.nan),
            "iou": np.where(both, robustness.mask_iou(masks[first], masks[second]), np.nan),
            "conf_own_mask": own[first],
            "conf_other_mask": np.where(found[second], predicted_class_confidence(
                members[first], x, masks[second], predicted[first], batch_size), np.nan),
            "reference_conf_own_mask": own[second],
            "reference_conf_other_mask": np.where(found[first], predicted_class_confidence(
                members[second], x, masks[first], predicted[second], batch_size), np.nan)}))
        progress.advance(1, f"{first} vs {second}: mean IoU {per_image[-1]['iou'].mean():.3f}")
    part = {"per_image": shards.concat(per_image, PER_IMAGE_COLUMNS)}
    key = {"options": options, "inputs": stage_io.fingerprint(workdir, inputs)}
    with shards.gathered(wd.path(OUT_DIR), STAGE, shard, key, part) as parts:
        if parts is None:
            print(shards.kept_line(STAGE, shard, outputs[0]), flush=True)
            return False
        # In pair order, as one run makes them (shards' rows come shard by shard).
        per_image = shards.concat(parts["per_image"], PER_IMAGE_COLUMNS)
        per_image = per_image.iloc[np.argsort(
            per_image["member_id"].map({m: k for k, m in enumerate(pair_order)}).to_numpy(),
            kind="stable")].reset_index(drop=True)
        summary = summarise(per_image, fraction).assign(selection=method, patch=patch,
                                                        features=n_features,
                                                        sis_threshold=threshold)
        records.write_csv(outputs[0], summary[SUMMARY_COLUMNS], SUMMARY_COLUMNS)
        records.write_csv(outputs[1], per_image, PER_IMAGE_COLUMNS)
        stage_io.write_stamp(workdir, stamp, inputs, outputs, options)
    print(f"informative_features: wrote {outputs[0]}", flush=True)
    return True


def features_kept(masks, groups, method):
    """Features each element mask holds: input elements for gradient, pixels or
    patches (groups of elements) for the backward selections."""
    if method == "gradient":
        return masks.sum(axis=1)
    hit = np.zeros((len(masks), int(groups.max()) + 1), bool)
    rows, elements = np.nonzero(masks)
    hit[rows, groups[elements]] = True
    return hit.sum(axis=1)


def summarise(per_image, fraction):
    """Per variant: IoU mean and std over pairs of each pair's mean; mean confidences
    (images without an SIS left out); counts of images without one."""
    values = ["iou", "conf_own_mask", "conf_other_mask", "reference_conf_own_mask",
              "reference_conf_other_mask"]
    keys = ["method", "sparsity", "seed", "member_id", "reference_id"]
    per_pair = per_image.groupby(keys, as_index=False, sort=False).agg(
        images=("image_id", "size"), **{value: (value, "mean") for value in values})
    summary = robustness.summarise_pairs(per_pair, ["method", "sparsity", "images"], values)
    summary = summary.rename(columns={f"{value}_mean": value for value in values[1:]})
    counts = per_image.assign(
        no_sis=~per_image["has_sis"].astype(bool),
        reference_no_sis=~per_image["reference_has_sis"].astype(bool)).groupby(
        ["method", "sparsity"], as_index=False).agg(
        no_sis=("no_sis", "sum"), reference_no_sis=("reference_no_sis", "sum"),
        features_kept_mean=("features_kept", "mean"))
    summary = summary.merge(counts, on=["method", "sparsity"], how="left")
    summary["fraction"] = float(fraction)
    summary = summary.sort_values(["method", "sparsity"], kind="stable")
    return summary.reset_index(drop=True)


def main(argv):
    del argv
    return execute(cli.settings_of(FLAGS))


def execute(settings):
    """The stage, from its parsed flags (cli.Settings)."""
    if run(settings.workdir, settings.images, settings.fraction, settings.seed, settings.batch_size,
           settings.force, settings.method, settings.patch, settings.sis_threshold,
           shards.parse(settings.shard)):
        stage_io.write_stage_flags(settings.workdir, OUT_DIR, STAGE, records.CLEAN,
                                   shards.flags_text(settings.flags_text))
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
