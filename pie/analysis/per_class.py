"""Per-class metrics of every member, and the per-class test of Hooker et al.

`per_class_metrics` turns predictions into one row per member x class (recall,
precision, the member's top-1); it is the one implementation of per-class recall.
`per_class_tstatistic` compares every compressed variant with the dense population
class by class: each member's class recall minus its own population's mean top-1,
then Welch's two-sided t-test between the two sets of members.
"""
import os

import numpy as np
import pandas as pd
from absl import logging

from pie.io import errors
from pie.io import records
from pie.io.workdir import PER_CLASS_DIR, Workdir
from pie.analysis import stats

STAGE_DIR = PER_CLASS_DIR
METRICS_STAGE = "aggregate_ckpt_metrics"  # the stage writing per_class_metrics.csv
METRICS_COLUMNS = [
    "member_id", "method", "sparsity", "seed", "class_id", "class_name", "n",
    "correct", "recall", "precision", "member_top1",
]
TSTATISTIC_COLUMNS = [
    "method", "sparsity", "class_id", "class_name", "baseline_mean_recall",
    "variant_mean_recall", "baseline_mean_top1", "variant_mean_top1",
    "normalized_delta", "t_statistic", "p_value", "p_value_bh", "significant",
    "direction",
]
SUMMARY_COLUMNS = [
    "method", "sparsity", "n_baseline", "n_variant", "baseline_mean_top1",
    "variant_mean_top1", "n_classes_hurt", "n_classes_helped",
]


def metrics_path(workdir, distribution=records.CLEAN):
    """Where `aggregate_ckpt_metrics` writes the per-class metrics."""
    return Workdir(workdir).file("per_class_metrics", distribution)


def read_metrics(path):
    """Per-class metrics written by `per_class_metrics`, class names kept as text."""
    if not os.path.exists(path):
        raise records.ContractError(f"missing input file {path}")
    # Only the metric columns may be empty (NaN); a class named 'NA' stays a name.
    metrics = pd.read_csv(path, dtype={"class_name": str, "member_id": str, "method": str},
                          keep_default_na=False,
                          na_values={"recall": [""], "precision": [""], "member_top1": [""]})
    missing = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise records.ContractError(f"{path} lacks columns {missing}")
    return metrics


def validate_test_options(alpha, correction):
    """Raises UsageError naming a bad significance level or correction."""
    if not 0 < alpha < 1:
        raise errors.UsageError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if correction not in stats.CORRECTIONS:
        raise errors.UsageError(
            f"correction {correction!r} is not allowed: use one of {list(stats.CORRECTIONS)}")


def class_counts(member, label, predicted, n_members, n_classes):
    """Counts per (member, class), each an int64 array of shape (n_members, n_classes).

    Returns (n, correct, n_predicted): images of the class, those the member got
    right, and images the member assigned to the class.
    """
    member = np.asarray(member, dtype=np.int64)
    label = np.asarray(label, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if not member.shape == label.shape == predicted.shape:
        raise ValueError("class_counts: member, label and predicted must have one shape, "
                         f"got {member.shape}, {label.shape}, {predicted.shape}")
    size = n_members * n_classes
    by_label = member * n_classes + label
    n = np.bincount(by_label, minlength=size)
    correct = np.bincount(by_label[label == predicted], minlength=size)
    n_predicted = np.bincount(member * n_classes + predicted, minlength=size)
    shape = (n_members, n_classes)
    return n.reshape(shape), correct.reshape(shape), n_predicted.reshape(shape)


def per_class_metrics(predictions, manifest, class_names):
    """One row per member x class, columns `METRICS_COLUMNS`.

    Args:
      predictions: frame with `member` (row in `manifest`), `label`, `predicted`
        (see `pie.analysis.stage_io.read_compact_predictions`).
      manifest: the population manifest.
      class_names: names indexed by class id; their number is the class count.

    recall = correct / n (NaN for a class with no image); precision = correct /
    images predicted as the class (NaN when the member never predicts it);
    member_top1 = the member's accuracy over all images.
    """
    n_members, n_classes = len(manifest), len(class_names)
    n, correct, n_predicted = class_counts(
        predictions["member"], predictions["label"], predictions["predicted"],
        n_members, n_classes)
    member_top1 = correct.sum(axis=1) / np.maximum(n.sum(axis=1), 1)

    def per_member(column):
        return np.repeat(manifest[column].to_numpy(), n_classes)

    return pd.DataFrame({
        "member_id": per_member("member_id"),
        "method": per_member("method"),
        "sparsity": per_member("sparsity"),
        "seed": per_member("seed"),
        "class_id": np.tile(np.arange(n_classes), n_members),
        "class_name": np.tile(np.asarray(class_names, dtype=object), n_members),
        "n": n.ravel(),
        "correct": correct.ravel(),
        "recall": stats.safe_ratio(correct, n).ravel(),
        "precision": stats.safe_ratio(correct, n_predicted).ravel(),
        "member_top1": np.repeat(member_top1, n_classes),
    }, columns=METRICS_COLUMNS)


def _recall_matrix(metrics):
    """(members frame, class frame, recall array members x classes) from metrics rows."""
    missing = [c for c in ("member_id", "method", "sparsity", "class_id", "class_name",
                           "recall", "member_top1") if c not in metrics.columns]
    if missing:
        raise records.ContractError(f"per-class metrics lack columns {missing}")
    ordered = metrics.sort_values(["member_id", "class_id"], kind="stable")
    members = ordered.drop_duplicates("member_id")[
        ["member_id", "method", "sparsity", "member_top1"]].reset_index(drop=True)
    classes = ordered.drop_duplicates("class_id")[["class_id", "class_name"]]
    classes = classes.sort_values("class_id").reset_index(drop=True)
    n_members, n_classes = len(members), len(classes)
    class_ids = ordered["class_id"].to_numpy()
    if len(ordered) != n_members * n_classes or not np.array_equal(
            class_ids, np.tile(classes["class_id"].to_numpy(), n_members)):
        raise records.ContractError(
            "per-class metrics must have one row per member and class, for the same "
            "classes in every member")
    recall = ordered["recall"].to_numpy(np.float64).reshape(n_members, n_classes)
    return members, classes, recall


def per_class_tstatistic(metrics, alpha=0.05, correction="none"):
    """The per-class test of every variant against the dense population.

    Args:
      metrics: per-member per-class rows as written by `per_class_metrics`.
      alpha: significance level, in (0, 1).
      correction: 'none' (significant when p_value <= alpha, the paper's rule) or
        'bh' (when the Benjamini-Hochberg adjusted p_value_bh <= alpha).

    Returns:
      (table, summary): `TSTATISTIC_COLUMNS` rows per variant x class and
      `SUMMARY_COLUMNS` rows per variant, sorted by method, sparsity (, class).
    """
    validate_test_options(alpha, correction)
    members, classes, recall = _recall_matrix(metrics)
    is_dense = (members["method"] == records.DENSE_METHOD).to_numpy()
    if not is_dense.any():
        raise records.ContractError(
            "no dense population (method == 'dense') to compare the variants with")
    top1 = members["member_top1"].to_numpy(np.float64)
    baseline = recall[is_dense] - top1[is_dense].mean()
    baseline_mean_top1 = top1[is_dense].mean()
    if is_dense.sum() < 2:
        logging.warning("the dense population has %d member: the t-test needs at least "
                        "2 per set, so every t-statistic and p-value is NaN",
                        is_dense.sum())

    variants = (members.loc[~is_dense, ["method", "sparsity"]].drop_duplicates()
                .sort_values(["method", "sparsity"]).reset_index(drop=True))
    n_classes = len(classes)
    rows, summaries = [], []
    for method, sparsity in variants.itertuples(index=False):
        in_variant = ((members["method"] == method) & (members["sparsity"] == sparsity)).to_numpy()
        if in_variant.sum() < 2:
            logging.warning("variant %s has %d member: its t-test is undefined (NaN, "
                            "not significant)", records.variant_key(method, sparsity),
                            in_variant.sum())
        variant_mean_top1 = top1[in_variant].mean()
        variant = recall[in_variant] - variant_mean_top1
        t_statistic, p_value = stats.welch_t_test(variant, baseline)
        rows.append(pd.DataFrame({
            "method": method,
            "sparsity": sparsity,
            "class_id": classes["class_id"].to_numpy(),
            "class_name": classes["class_name"].to_numpy(),
            "baseline_mean_recall": recall[is_dense].mean(axis=0),
            "variant_mean_recall": recall[in_variant].mean(axis=0),
            "baseline_mean_top1": baseline_mean_top1,
            "variant_mean_top1": variant_mean_top1,
            "normalized_delta": variant.mean(axis=0) - baseline.mean(axis=0),
            "t_statistic": t_statistic,
            "p_value": p_value,
        }))
        summaries.append({
            "method": method, "sparsity": sparsity, "n_baseline": int(is_dense.sum()),
            "n_variant": int(in_variant.sum()), "baseline_mean_top1": baseline_mean_top1,
            "variant_mean_top1": variant_mean_top1,
        })
    if not rows:
        logging.warning("the manifest has no compressed variant: nothing to compare")
        return (pd.DataFrame(columns=TSTATISTIC_COLUMNS),
                pd.DataFrame(columns=SUMMARY_COLUMNS))

    table = pd.concat(rows, ignore_index=True)
    # One Benjamini-Hochberg family per variant: its classes.
    p_by_variant = table["p_value"].to_numpy().reshape(len(rows), n_classes)
    table["p_value_bh"] = stats.benjamini_hochberg(p_by_variant).ravel()
    tested = table["p_value_bh" if correction == "bh" else "p_value"]
    table["significant"] = (tested <= alpha).to_numpy()  # NaN compares False
    delta = table["normalized_delta"].to_numpy()
    table["direction"] = np.select(
        [delta < 0, delta > 0, delta == 0], ["hurt", "helped", "unchanged"], "undefined")

    counted = table[table["significant"]]
    summary = pd.DataFrame(summaries)
    for direction in ("hurt", "helped"):
        counts = (counted[counted["direction"] == direction]
                  .groupby(["method", "sparsity"]).size().rename(f"n_classes_{direction}"))
        summary = summary.merge(counts.reset_index(), on=["method", "sparsity"], how="left")
        summary[f"n_classes_{direction}"] = (
            summary[f"n_classes_{direction}"].fillna(0).astype(np.int64))
    return table[TSTATISTIC_COLUMNS], summary[SUMMARY_COLUMNS]
