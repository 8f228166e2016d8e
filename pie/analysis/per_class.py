"""Per-class metrics of every member, and the per-class test of Hooker et al.

`per_class_metrics` turns predictions into one row per member x class (recall,
precision, the member's top-1); it is the one implementation of per-class recall.
`per_class_tstatistic` compares every compressed variant with the dense population
class by class: each member's class recall minus its own population's mean top-1,
then a test between the two sets of members (Welch's two-sided t-test by default,
the paper's rule; a paired t-test by seed, or a permutation test), with the
interval of the effect that inverts that test, a multiple-testing rule
(Benjamini-Hochberg per variant by default) and the power of the design. A class on
which the two populations together make fewer than `min_errors` errors is a
`ceiling` class: not tested, since its normalised values differ only by the two
populations' mean top-1.
`compare_variants` and `decide` are its two halves, so that one correction can
span the tables of several distributions (`--correction=bh_all`).
"""
import os

import numpy as np
import pandas as pd
from absl import logging

from pie.io import csv_text, errors
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
    "variant_mean_recall", "recall_change", "baseline_mean_top1", "variant_mean_top1",
    "normalized_delta", "effect_points", "effect_ci_low_points", "effect_ci_high_points",
    "effect_ci_method", "n_errors", "test", "t_statistic", "p_value", "p_value_bh",
    "significant", "significant_uncorrected", "direction",
]
SUMMARY_COLUMNS = [
    "method", "sparsity", "n_baseline", "n_variant", "n_pairs", "baseline_mean_top1",
    "variant_mean_top1", "test", "correction", "alpha", "rule", "n_classes_tested",
    "n_classes_hurt", "n_classes_helped", "recall_change_hurt", "recall_change_helped",
    "n_helped_lost_recall", "min_detectable_delta_points", "n_classes_hurt_uncorrected",
    "n_classes_helped_uncorrected", "min_errors", "n_classes_ceiling", "ceiling_classes",
    "small_population",
]
NO_SPREAD = "no_variance"  # direction of a class whose test is undefined: no member varies
CEILING = "ceiling"  # direction of a class with fewer errors than min_errors: not tested
# The normalised delta lies in [-2, 2] (200 points): a larger "detectable" change is
# beyond what the measure can reach, so it is reported as undefined.
MAX_DELTA = 2.0
POWER = 0.8
CONFIDENCE = 0.95


def metrics_path(workdir, distribution=records.CLEAN):
    """Where `aggregate_ckpt_metrics` writes the per-class metrics."""
    return Workdir(workdir).file("per_class_metrics", distribution)


def read_metrics(path):
    """Per-class metrics written by `per_class_metrics`, class names kept as text."""
    if not os.path.exists(path):
        raise records.ContractError(f"missing input file {path}")
    records.check_written(path)  # cut or edited since aggregate_ckpt_metrics wrote it
    # Only the metric columns may be empty (NaN); a class named 'NA' stays a name.
    metrics = csv_text.unguard(pd.read_csv(  # (text written spreadsheet-safe: csv_text)
        path, dtype={"class_name": str, "member_id": str, "method": str},
        keep_default_na=False,
        na_values={"recall": [""], "precision": [""], "member_top1": [""]}))
    missing = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise records.ContractError(f"{path} lacks columns {missing}")
    return metrics


def validate_test_options(alpha, correction, test="welch", resamples=stats.DEFAULT_RESAMPLES,
                          min_errors=None, resample_seed=0):
    """Raises UsageError naming a bad significance level, correction, test, count or seed."""
    if not 0 < alpha < 1:
        raise errors.UsageError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if correction not in stats.CORRECTIONS:
        raise errors.UsageError(
            f"correction {correction!r} is not allowed: use one of {list(stats.CORRECTIONS)}")
    if test not in stats.TESTS:
        raise errors.UsageError(
            f"test {test!r} is not allowed: use one of {list(stats.TESTS)}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or \
            resamples < 1:
        raise errors.UsageError(f"resamples must be a positive integer, got {resamples!r}")
    if min_errors is not None and (
            isinstance(min_errors, bool) or not isinstance(min_errors, (int, np.integer))
            or min_errors < 0):
        raise errors.UsageError(
            f"min_errors must be an integer >= 0 (default: the members of the smaller "
            f"population), got {min_errors!r}")
    # numpy seeds its generators only from integers >= 0: refused here, before any read
    if isinstance(resample_seed, bool) or not isinstance(resample_seed, (int, np.integer)) \
            or resample_seed < 0:
        raise errors.UsageError(f"resample_seed must be an integer >= 0, got {resample_seed!r}")


def define_decision_flags(flag_values):
    """--correction and --min_errors, shared by gen_tstatistic, subgroups and the noise
    floor (defined by each stage's define_flags, never on import)."""
    from absl import flags
    flags.DEFINE_string(
        "correction", stats.DEFAULT_CORRECTION, "Multiple-testing rule for `significant`: "
        "'bh' (the default: Benjamini-Hochberg adjusted p_value_bh <= alpha, over the "
        "tests of one variant), 'none' (p_value <= alpha, the published rule) or 'bh_all' "
        "(over every test of the run).", flag_values=flag_values)
    flags.DEFINE_integer(
        "min_errors", None, "A class (group) on which the two populations together make "
        "fewer errors is 'ceiling': not tested, never significant; an integer >= 0. "
        "Default: the number of members of the smaller population.",
        flag_values=flag_values)


def ceiling_threshold(min_errors, n_variant, n_baseline):
    """The errors a class needs to be tested: `min_errors`, by default the members of
    the smaller population (one error per member of it)."""
    return int(min(n_variant, n_baseline)) if min_errors is None else int(min_errors)


def detectable_points(standard_error_value, df, alpha):
    """`min_detectable_delta` in points, NaN beyond what the measure can reach."""
    detectable = stats.min_detectable_delta(standard_error_value, df, alpha, POWER)
    return 100 * detectable if detectable <= MAX_DELTA else np.nan


def warn_small(name, n_members):
    """Logs that a population below stats.SMALL_POPULATION members has little power."""
    if n_members < stats.SMALL_POPULATION:
        logging.warning("%s has %d members (< %d): its tests have little power, and "
                        "'no significant class' means little", name, n_members,
                        stats.SMALL_POPULATION)


def class_counts(member, label, predicted, n_members, n_classes):
    """Counts per (member, class), each an int64 array of shape (n_members, n_classes).

    Returns (n, correct, n_predicted): images of the class, those the member got
    right, and images the member assigned to the class.
    """
    member, label, predicted = (np.asarray(values) for values in (member, label, predicted))
    if not member.shape == label.shape == predicted.shape:
        raise ValueError("class_counts: member, label and predicted must have one shape, "
                         f"got {member.shape}, {label.shape}, {predicted.shape}")
    size = n_members * n_classes
    # One int64 key array, reused in place (9 million rows at ImageNet scale).
    key = member.astype(np.int64)
    key *= n_classes
    key += label
    n = np.bincount(key, minlength=size)
    correct = np.bincount(key[label == predicted], minlength=size)
    key -= label
    key += predicted
    n_predicted = np.bincount(key, minlength=size)
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
    member_columns = ["member_id", "method", "sparsity", "member_top1"] + (
        ["seed"] if "seed" in ordered.columns else [])
    members = ordered.drop_duplicates("member_id")[member_columns].reset_index(drop=True)
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
    if {"n", "correct"} <= set(ordered.columns):
        wrong = (ordered["n"].to_numpy(np.int64) - ordered["correct"].to_numpy(np.int64))
        wrong = wrong.reshape(n_members, n_classes)
    else:  # an older table: errors unknown, no class is a ceiling class
        wrong = np.full((n_members, n_classes), np.iinfo(np.int32).max, np.int64)
    return members, classes, recall, wrong


def pair_by_seed(members, in_variant, is_dense, key):
    """(variant rows, dense rows) of `members`, matched by seed, in seed order.

    Raises UsageError unless every member of the variant has exactly one dense
    member of its seed (and no two members of the variant share a seed).
    """
    if "seed" not in members.columns:
        raise errors.UsageError("--test=paired pairs members by seed, but the per-class "
                                "metrics have no seed column")
    seeds = members["seed"].to_numpy()
    dense_seeds = pd.Series(seeds[is_dense])
    repeated = dense_seeds[dense_seeds.duplicated()]
    if len(repeated):
        raise errors.UsageError(
            f"--test=paired needs one dense member per seed, but seed {repeated.iloc[0]} has "
            f"{int((dense_seeds == repeated.iloc[0]).sum())}; use --test=welch")
    variant_seeds = pd.Series(seeds[in_variant])
    if variant_seeds.duplicated().any():
        raise errors.UsageError(
            f"--test=paired needs one member per seed in each variant, but {key} has "
            f"{int((variant_seeds == variant_seeds[variant_seeds.duplicated()].iloc[0]).sum())} "
            f"of seed {variant_seeds[variant_seeds.duplicated()].iloc[0]}; use --test=welch")
    unmatched = sorted(set(variant_seeds) - set(dense_seeds))
    if unmatched:
        raise errors.UsageError(
            f"--test=paired needs a dense member of the same seed for every member of "
            f"{key}, but seeds {unmatched} have none (dense seeds "
            f"{sorted(set(dense_seeds))}); use --test=welch")
    variant_rows = np.flatnonzero(in_variant)[np.argsort(seeds[in_variant], kind="stable")]
    dense_index = {seed: row for row, seed in zip(np.flatnonzero(is_dense), seeds[is_dense])}
    dense_rows = np.array([dense_index[seed] for seed in seeds[variant_rows]], np.int64)
    return variant_rows, dense_rows


def _median(values):
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else np.nan


def compare_classes(recall, wrong, top1, variant_rows, dense_rows, test="welch",
                    alpha=0.05, resamples=stats.DEFAULT_RESAMPLES, seed=0, min_errors=None):
    """The class test of one set of members against another (rows of the matrices).

    Returns a dict of per-class arrays (delta, t, p, interval, errors, no_spread,
    ceiling, mean recalls) and the two mean top-1 values and the detectable change:
    the one computation behind the variant tables and the noise floor's placebo.
    """
    variant_mean_top1 = top1[variant_rows].mean()
    baseline_mean_top1 = top1[dense_rows].mean()
    variant = recall[variant_rows] - variant_mean_top1
    baseline = recall[dense_rows] - baseline_mean_top1
    paired = test == "paired"
    t_statistic, p_value, flat = stats.compare(variant, baseline, test, resamples, seed)
    low, high = stats.interval_of_test(variant, baseline, test, CONFIDENCE)
    n_errors = wrong[variant_rows].sum(axis=0) + wrong[np.unique(dense_rows)].sum(axis=0)
    ceiling = n_errors < ceiling_threshold(min_errors, len(variant_rows),
                                           len(np.unique(dense_rows)))
    for values in (t_statistic, p_value, low, high):
        values[ceiling] = np.nan  # never tested: the gap is the populations' top-1
    delta = variant.mean(axis=0) - baseline.mean(axis=0)
    error, df = stats.standard_error(variant, baseline, paired)
    error[flat | ceiling] = np.nan  # untestable classes say nothing about the power
    return {"delta": delta, "t": t_statistic, "p": p_value, "low": low, "high": high,
            "n_errors": n_errors, "flat": flat, "ceiling": ceiling,
            "variant_mean_top1": variant_mean_top1, "baseline_mean_top1": baseline_mean_top1,
            "variant_mean_recall": recall[variant_rows].mean(axis=0),
            "baseline_mean_recall": recall[dense_rows].mean(axis=0),
            "detectable_points": detectable_points(_median(error), _median(df), alpha)}


def compare_variants(metrics, test="welch", alpha=0.05, resamples=stats.DEFAULT_RESAMPLES,
                     seed=0, min_errors=None):
    """Every variant against the dense population, class by class, before a decision.

    Returns (table, summary): the `TSTATISTIC_COLUMNS` rows without `p_value_bh`,
    `significant` and `direction` (they come from `decide`), plus private
    `_no_spread` and `_ceiling` columns; and per variant the sizes, top-1 and the
    smallest detectable normalised delta. `alpha` is the level the power refers to.
    """
    members, classes, recall, wrong = _recall_matrix(metrics)
    is_dense = (members["method"] == records.DENSE_METHOD).to_numpy()
    if not is_dense.any():
        raise records.ContractError(
            "no dense population (method == 'dense') to compare the variants with")
    top1 = members["member_top1"].to_numpy(np.float64)
    if is_dense.sum() < 2 and test != "paired":
        logging.warning("the dense population has %d member: the test needs at least "
                        "2 per set, so every t-statistic and p-value is NaN",
                        is_dense.sum())
    warn_small("the dense population", int(is_dense.sum()))

    variants = (members.loc[~is_dense, ["method", "sparsity"]].drop_duplicates()
                .sort_values(["method", "sparsity"]).reset_index(drop=True))
    rows, summaries = [], []
    for method, sparsity in variants.itertuples(index=False):
        key = records.variant_key(method, sparsity)
        in_variant = ((members["method"] == method)
                      & (members["sparsity"] == sparsity)).to_numpy()
        if test == "paired":
            variant_rows, dense_rows = pair_by_seed(members, in_variant, is_dense, key)
        else:
            variant_rows, dense_rows = np.flatnonzero(in_variant), np.flatnonzero(is_dense)
        if len(variant_rows) < 2:
            logging.warning("variant %s has %d member: its test is undefined (NaN, "
                            "not significant)", key, len(variant_rows))
        else:
            warn_small(f"variant {key}", len(variant_rows))
        # Each member's class recall minus its own population's mean top-1.
        paired = test == "paired"
        result = compare_classes(recall, wrong, top1, variant_rows, dense_rows, test, alpha,
                                 resamples, seed, min_errors)
        delta, low, high = result["delta"], result["low"], result["high"]
        baseline_mean_top1 = result["baseline_mean_top1"]
        variant_mean_top1 = result["variant_mean_top1"]
        baseline_mean_recall = result["baseline_mean_recall"]
        variant_mean_recall = result["variant_mean_recall"]
        n_baseline = len(set(dense_rows))
        rows.append(pd.DataFrame({
            "method": method,
            "sparsity": sparsity,
            "class_id": classes["class_id"].to_numpy(),
            "class_name": classes["class_name"].to_numpy(),
            "baseline_mean_recall": baseline_mean_recall,
            "variant_mean_recall": variant_mean_recall,
            "recall_change": variant_mean_recall - baseline_mean_recall,
            "baseline_mean_top1": baseline_mean_top1,
            "variant_mean_top1": variant_mean_top1,
            "normalized_delta": delta,
            "effect_points": 100 * delta,
            "effect_ci_low_points": 100 * low,
            "effect_ci_high_points": 100 * high,
            "effect_ci_method": stats.INTERVAL_METHODS[test],
            "n_errors": result["n_errors"],
            "test": test,
            "t_statistic": result["t"],
            "p_value": result["p"],
            "_no_spread": result["flat"],
            "_ceiling": result["ceiling"],
        }))
        summaries.append({
            "method": method, "sparsity": sparsity, "n_baseline": n_baseline,
            "n_variant": len(variant_rows), "n_pairs": len(variant_rows) if paired else 0,
            "baseline_mean_top1": baseline_mean_top1,
            "variant_mean_top1": variant_mean_top1, "test": test,
            "min_detectable_delta_points": result["detectable_points"],
            "min_errors": ceiling_threshold(min_errors, len(variant_rows), n_baseline),
            "small_population": min(len(variant_rows), n_baseline) < stats.SMALL_POPULATION,
        })
    if not rows:
        logging.warning("the manifest has no compressed variant: nothing to compare")
        return (pd.DataFrame(columns=TSTATISTIC_COLUMNS + ["_no_spread", "_ceiling"]),
                pd.DataFrame(columns=SUMMARY_COLUMNS))
    return pd.concat(rows, ignore_index=True), pd.DataFrame(summaries)


TEST_NAMES = {"welch": "Welch's t-test", "paired": "paired t-test (members paired by seed)",
              "permutation": "permutation test"}


def significance_rule(test, correction, alpha, n_tests=None, family="variant x class"):
    """The rule `significant` follows, in words (written in the summary)."""
    if correction == "none":
        return f"{TEST_NAMES[test]}: p_value <= {alpha:g}, no correction"
    scope = ("the classes of each variant" if correction == "bh" else
             f"all {n_tests} tests of the study (every {family})")
    return (f"{TEST_NAMES[test]}: p_value_bh <= {alpha:g}, Benjamini-Hochberg over {scope}")


def decide(table, summary, alpha=0.05, correction=stats.DEFAULT_CORRECTION,
           keys=("method", "sparsity"),
           family="variant x class"):
    """Adds p_value_bh, significant and direction to `compare_variants` output, and
    the counts to its summary. `keys` name a variant (and, when several tables are
    decided together, the distribution); with `bh_all` every row of `table` is one
    family, so a concatenation of distributions is corrected at once.
    """
    validate_test_options(alpha, correction)
    keys = list(keys)
    table = table.copy()
    summary = summary.copy()
    if table.empty:
        return table, summary
    if correction == "bh_all":
        table["p_value_bh"] = stats.benjamini_hochberg(table["p_value"].to_numpy())
    else:  # one family per variant: its classes
        table["p_value_bh"] = table.groupby(keys, sort=False)["p_value"].transform(
            lambda p: stats.benjamini_hochberg(p.to_numpy()))
    tested = table["p_value_bh" if correction != "none" else "p_value"]
    table["significant"] = (tested <= alpha).to_numpy()  # NaN compares False
    table["significant_uncorrected"] = (table["p_value"] <= alpha).to_numpy()
    delta = table["normalized_delta"].to_numpy(np.float64)
    ceiling = (table["_ceiling"].to_numpy(bool) if "_ceiling" in table.columns
               else np.zeros(len(table), bool))
    table["direction"] = np.select(
        [np.isnan(delta), ceiling, table["_no_spread"].to_numpy(bool), delta < 0,
         delta > 0, delta == 0],
        ["undefined", CEILING, NO_SPREAD, "hurt", "helped", "unchanged"], "undefined")

    tests = set(table["test"])
    n_tests = int(table["p_value"].notna().sum())
    summary["correction"] = correction
    summary["alpha"] = alpha
    summary["rule"] = significance_rule(tests.pop() if len(tests) == 1 else "welch",
                                        correction, alpha, n_tests, family)
    tested_counts = table.groupby(keys)["p_value"].count().rename("n_classes_tested")
    summary = summary.merge(tested_counts.reset_index(), on=keys, how="left")
    for direction in ("hurt", "helped"):
        raw = table[table["significant_uncorrected"] & (table["direction"] == direction)]
        summary = summary.merge(raw.groupby(keys).size().rename(
            f"n_classes_{direction}_uncorrected").reset_index(), on=keys, how="left")
        summary[f"n_classes_{direction}_uncorrected"] = (
            summary[f"n_classes_{direction}_uncorrected"].fillna(0).astype(np.int64))
    ceilings = table[table["direction"] == CEILING].groupby(keys)
    summary = summary.merge(ceilings.size().rename("n_classes_ceiling").reset_index(),
                            on=keys, how="left")
    summary["n_classes_ceiling"] = summary["n_classes_ceiling"].fillna(0).astype(np.int64)
    summary = summary.merge(ceilings["class_name"].agg(
        lambda names: "; ".join(str(name) for name in names)).rename(
        "ceiling_classes").reset_index(), on=keys, how="left")
    summary["ceiling_classes"] = summary["ceiling_classes"].fillna("")
    counted = table[table["significant"]]
    for direction in ("hurt", "helped"):
        rows = counted[counted["direction"] == direction].groupby(keys)
        summary = summary.merge(rows.size().rename(f"n_classes_{direction}").reset_index(),
                                on=keys, how="left")
        summary[f"n_classes_{direction}"] = (
            summary[f"n_classes_{direction}"].fillna(0).astype(np.int64))
        summary = summary.merge(
            rows["recall_change"].mean().rename(f"recall_change_{direction}").reset_index(),
            on=keys, how="left")
    lost = counted[(counted["direction"] == "helped") & (counted["recall_change"] < 0)]
    summary = summary.merge(lost.groupby(keys).size().rename("n_helped_lost_recall")
                            .reset_index(), on=keys, how="left")
    summary["n_helped_lost_recall"] = summary["n_helped_lost_recall"].fillna(0).astype(
        np.int64)
    summary["n_classes_tested"] = summary["n_classes_tested"].fillna(0).astype(np.int64)
    return table, summary


def per_class_tstatistic(metrics, alpha=0.05, correction=stats.DEFAULT_CORRECTION,
                         test="welch", resamples=stats.DEFAULT_RESAMPLES, seed=0,
                         min_errors=None):
    """The per-class test of every variant against the dense population.

    Args:
      metrics: per-member per-class rows as written by `per_class_metrics`.
      alpha: significance level, in (0, 1).
      correction: 'bh' (the default: significant when the Benjamini-Hochberg
        adjusted p_value_bh <= alpha, one family per variant), 'none' (p_value <=
        alpha, the paper's rule) or 'bh_all' (one family: every variant x class).
      test: 'welch' (default), 'paired' (by seed) or 'permutation'.
      resamples: permutation splits (Monte-Carlo) and bootstrap resamples.
      seed: seeds the permutation draws.
      min_errors: a class with fewer errors (both populations together) is
        `ceiling` and not tested; None: the members of the smaller population.

    Returns:
      (table, summary): `TSTATISTIC_COLUMNS` rows per variant x class and
      `SUMMARY_COLUMNS` rows per variant, sorted by method, sparsity (, class).
    """
    validate_test_options(alpha, correction, test, resamples, min_errors, seed)
    table, summary = compare_variants(metrics, test, alpha, resamples, seed, min_errors)
    if table.empty:
        return table[TSTATISTIC_COLUMNS], summary[SUMMARY_COLUMNS]
    table, summary = decide(table, summary, alpha, correction)
    return table[TSTATISTIC_COLUMNS], summary[SUMMARY_COLUMNS]
