"""Statistical tests shared by the analysis stages, vectorised over classes.

`welch_t_test` compares two populations class by class (Welch's two-sided t-test,
unequal variances, as in Hooker et al.); `benjamini_hochberg` adjusts the p-values
of one family of tests (the classes of one variant) for the false discovery rate.
"""
import warnings

import numpy as np
from scipy import stats as scipy_stats

CORRECTIONS = ("none", "bh")


def safe_ratio(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is not positive."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def welch_t_test(variant_values, baseline_values):
    """Welch's two-sided t-test per column between two sets of rows.

    Args:
      variant_values: array (n_variant, n_columns), one row per member.
      baseline_values: array (n_baseline, n_columns).

    Returns:
      (t_statistic, p_value), each of shape (n_columns,). Positive t means the
      variant's mean is higher. NaN where the test is undefined: a set with fewer
      than 2 members, or a column with zero variance in both sets.
    """
    variant_values = np.asarray(variant_values, dtype=np.float64)
    baseline_values = np.asarray(baseline_values, dtype=np.float64)
    if variant_values.ndim != 2 or baseline_values.ndim != 2:
        raise ValueError("welch_t_test takes two 2-d arrays (members x columns), got "
                         f"shapes {variant_values.shape} and {baseline_values.shape}")
    if variant_values.shape[1] != baseline_values.shape[1]:
        raise ValueError(
            f"welch_t_test: the sets have {variant_values.shape[1]} and "
            f"{baseline_values.shape[1]} columns; they must match")
    n_columns = variant_values.shape[1]
    if min(len(variant_values), len(baseline_values)) < 2:
        # One member has no variance estimate: the test is undefined.
        nan = np.full(n_columns, np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # Constant columns (e.g. a class every member gets right) give 0/0: NaN is
        # the honest answer, the warning would only be noise.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_ind(
            variant_values, baseline_values, axis=0, equal_var=False)
    return (np.asarray(result.statistic, dtype=np.float64),
            np.asarray(result.pvalue, dtype=np.float64))


def benjamini_hochberg(p_values):
    """Benjamini-Hochberg adjusted p-values along the last axis.

    Each row (last axis) is one family of tests. The adjusted value of the k-th
    smallest of m p-values is min over j >= k of p_(j) * m / j, capped at 1. NaN
    p-values (undefined tests) stay NaN and do not count in m.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    if p_values.ndim == 0:
        raise ValueError("benjamini_hochberg takes an array of p-values, got a scalar")
    finite = p_values[~np.isnan(p_values)]
    if np.any((finite < 0) | (finite > 1)):
        raise ValueError("benjamini_hochberg: p-values must lie in [0, 1]")
    order = np.argsort(p_values, axis=-1, kind="stable")  # NaN sorts last
    ordered = np.take_along_axis(p_values, order, axis=-1)
    n_tests = np.sum(~np.isnan(p_values), axis=-1, keepdims=True)
    rank = np.arange(1, p_values.shape[-1] + 1)
    scaled = ordered * n_tests / rank
    # Running minimum from the largest p down; fmin skips the trailing NaNs.
    adjusted_ordered = np.flip(np.fmin.accumulate(np.flip(scaled, -1), axis=-1), -1)
    adjusted_ordered = np.minimum(adjusted_ordered, 1.0)
    adjusted = np.empty_like(p_values)
    np.put_along_axis(adjusted, order, adjusted_ordered, axis=-1)
    return adjusted
