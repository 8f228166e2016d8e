"""Statistical tests shared by the analysis stages, vectorised over columns (classes).

Each test compares two sets of members column by column and answers NaN where it
is undefined:

  welch        Welch's two-sided t-test (unequal variances), as in Hooker et al.;
               the sets are independent. `scipy.stats.ttest_ind(equal_var=False)`
               written out over scipy.special's t distribution: the t-test stage
               then does not import scipy.stats.
  paired       the paired t-test (`scipy.stats.ttest_rel`) on rows matched by the
               caller (a variant member and the dense member of the same seed).
  permutation  a two-sided permutation test of the difference of the means
               (`scipy.stats.permutation_test`): exact (every split) when the
               number of splits is at most `n_resamples`, Monte-Carlo otherwise,
               seeded.

A test is undefined with fewer than 2 members (pairs) in a set, and when the values
do not vary: both sets constant (welch, permutation) or constant paired differences
(paired). Such a column gets p = NaN and is never significant, whatever the means:
a class every member gets right says nothing about the class, only about the two
populations' mean top-1 that the normalisation subtracts.

`bootstrap_interval` gives a seeded percentile interval of the difference of the
means (members resampled with replacement); `benjamini_hochberg` adjusts p-values
for the false discovery rate; `min_detectable_delta` is the smallest difference a
two-sided t-test detects with a given power.
"""
import math
import warnings

import numpy as np


def _scipy_stats():
    # Imported on first use: scipy.stats takes about 0.7 s to import, which the
    # stages that run no test (per-class metrics, PIEs), and the default Welch test
    # (scipy.special's distributions), should not pay.
    from scipy import stats
    return stats


def _scipy_special():
    from scipy import special
    return special


def _scipy_optimize():
    from scipy import optimize
    return optimize


TESTS = ("welch", "paired", "permutation")
CORRECTIONS = ("none", "bh", "bh_all")
# Benjamini-Hochberg over the classes of each variant unless asked otherwise: dozens of
# uncorrected tests at 0.05 find "significant" classes in seed noise alone.
DEFAULT_CORRECTION = "bh"
DEFAULT_RESAMPLES = 9999
# Below this many members a population's tests have little power (said in the logs
# and the report); intervals built from fewer seeds are labelled approximate.
SMALL_POPULATION = 5
APPROXIMATE_BELOW = 10
PERMUTATION_BATCH_VALUES = 50_000_000
# Values closer than this (relative to their size) count as equal: normalised recalls
# are differences of fractions, and a constant column may differ in the last bits.
SPREAD_TOLERANCE = 1e-12


def safe_ratio(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is not positive."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _two_sets(variant_values, baseline_values, name):
    variant_values = np.asarray(variant_values, dtype=np.float64)
    baseline_values = np.asarray(baseline_values, dtype=np.float64)
    if variant_values.ndim != 2 or baseline_values.ndim != 2:
        raise ValueError(f"{name} takes two 2-d arrays (members x columns), got "
                         f"shapes {variant_values.shape} and {baseline_values.shape}")
    if variant_values.shape[1] != baseline_values.shape[1]:
        raise ValueError(
            f"{name}: the sets have {variant_values.shape[1]} and "
            f"{baseline_values.shape[1]} columns; they must match")
    return variant_values, baseline_values


def _paired_sets(variant_values, baseline_values, name):
    variant_values, baseline_values = _two_sets(variant_values, baseline_values, name)
    if len(variant_values) != len(baseline_values):
        raise ValueError(f"{name}: paired sets need one row each per pair, got "
                         f"{len(variant_values)} and {len(baseline_values)} rows")
    return variant_values, baseline_values


def is_constant(values):
    """Per column: whether every row holds the same value (up to float rounding)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.ones(values.shape[1:], bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.ptp(values, axis=0)
        scale = np.maximum(1.0, np.max(np.abs(values), axis=0))
    return spread <= SPREAD_TOLERANCE * scale  # NaN columns: False (NaN elsewhere)


def no_spread(variant_values, baseline_values, test="welch"):
    """Per column: whether the test is undefined because the values do not vary.

    welch and permutation: both sets constant; paired: the paired differences constant.
    """
    if test == "paired":
        variant_values, baseline_values = _paired_sets(
            variant_values, baseline_values, "no_spread")
        return is_constant(variant_values - baseline_values)
    return is_constant(variant_values) & is_constant(baseline_values)


def _undefined(n_columns):
    nan = np.full(n_columns, np.nan)
    return nan, nan.copy()


def welch_t_test(variant_values, baseline_values):
    """Welch's two-sided t-test per column between two sets of rows.

    Args:
      variant_values: array (n_variant, n_columns), one row per member.
      baseline_values: array (n_baseline, n_columns).

    Returns:
      (t_statistic, p_value), each of shape (n_columns,). Positive t means the
      variant's mean is higher. NaN where the test is undefined: a set with fewer
      than 2 members, or a column with zero variance in both sets (even when the
      means differ: scipy would give t = +-inf, p = 0).
    """
    variant_values, baseline_values = _two_sets(variant_values, baseline_values,
                                                "welch_t_test")
    n_columns = variant_values.shape[1]
    if min(len(variant_values), len(baseline_values)) < 2:
        return _undefined(n_columns)  # one member has no variance estimate
    # scipy.stats.ttest_ind(equal_var=False), written out: the same t and
    # Welch-Satterthwaite df, p = 2 sf(|t|) of the t distribution (scipy.special, as
    # scipy.stats uses) without importing scipy.stats.
    error, df = standard_error(variant_values, baseline_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_statistic = (np.mean(variant_values, axis=0) - np.mean(baseline_values, axis=0)) / error
        p_value = 2 * _scipy_special().stdtr(df, -np.abs(t_statistic))
    undefined = no_spread(variant_values, baseline_values, "welch")
    t_statistic[undefined] = p_value[undefined] = np.nan
    return t_statistic, p_value


def paired_t_test(variant_values, baseline_values):
    """The paired two-sided t-test per column; row i of both sets is one pair.

    Returns (t_statistic, p_value) as `scipy.stats.ttest_rel(variant, baseline)`;
    NaN with fewer than 2 pairs or constant differences in a column.
    """
    variant_values, baseline_values = _paired_sets(variant_values, baseline_values,
                                                   "paired_t_test")
    n_columns = variant_values.shape[1]
    if len(variant_values) < 2:
        return _undefined(n_columns)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _scipy_stats().ttest_rel(variant_values, baseline_values, axis=0)
    t_statistic = np.asarray(result.statistic, dtype=np.float64).copy()
    p_value = np.asarray(result.pvalue, dtype=np.float64).copy()
    undefined = no_spread(variant_values, baseline_values, "paired")
    t_statistic[undefined] = p_value[undefined] = np.nan
    return t_statistic, p_value


def _mean_difference(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_test(variant_values, baseline_values, n_resamples=DEFAULT_RESAMPLES, seed=0):
    """Two-sided permutation test per column of mean(variant) - mean(baseline).

    Members are reassigned between the two sets: every split when there are at most
    `n_resamples` of them (exact), otherwise `n_resamples` random splits drawn from
    `numpy.random.default_rng(seed)` (Monte-Carlo; p includes the observed split).
    Returns (difference of the means, p_value); p is NaN with fewer than 2 members in
    a set, a column holding NaN, or both sets constant.
    """
    variant_values, baseline_values = _two_sets(variant_values, baseline_values,
                                                "permutation_test")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) \
            or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    n_columns = variant_values.shape[1]
    difference = _mean_difference(variant_values, baseline_values, 0)
    p_value = np.full(n_columns, np.nan)
    if min(len(variant_values), len(baseline_values)) < 2:
        return difference, p_value
    testable = (np.isfinite(variant_values).all(axis=0)
                & np.isfinite(baseline_values).all(axis=0)
                & ~no_spread(variant_values, baseline_values, "permutation"))
    if testable.any():
        # Resamples per batch: about 50 million values at a time (400 MB), not every
        # resample of 1,000 classes x 60 members at once.
        values = int(testable.sum()) * (len(variant_values) + len(baseline_values))
        batch = max(1, PERMUTATION_BATCH_VALUES // values)
        result = _scipy_stats().permutation_test(
            (variant_values[:, testable], baseline_values[:, testable]), _mean_difference,
            permutation_type="independent", vectorized=True, n_resamples=int(n_resamples),
            batch=batch, alternative="two-sided", axis=0, rng=np.random.default_rng(seed))
        p_value[testable] = result.pvalue
    return difference, p_value


def n_splits(n_variant, n_baseline):
    """Distinct ways to split the members into sets of these sizes (exact test size)."""
    return math.comb(int(n_variant) + int(n_baseline), int(n_variant))


def percentiles(rows, percents, overwrite=False):
    """`numpy.percentile(rows, percents, axis=1)` (its default, linear method).

    The same order statistics and interpolation, found by one partial sort of each
    row around the few positions needed, not a full quantile pass: 3x faster on
    1,000 rows of 9,999 resamples. Rows must hold no NaN. With `overwrite`, a
    float64 `rows` is partially sorted in place instead of copied.
    """
    rows = np.asarray(rows, np.float64)
    n = rows.shape[1]
    position = (n - 1) * (np.asarray(percents, np.float64) / 100)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    ordered = rows if overwrite else rows.copy()
    ordered.partition(np.unique(np.r_[below, above]), axis=1)
    low, high = ordered[:, below], ordered[:, above]
    weight = position - below
    step = high - low
    # numpy's interpolation, from the nearer end for the same rounding.
    result = low + step * weight
    np.subtract(high, step * (1 - weight), out=result, where=weight >= 0.5)
    return result.T


def bootstrap_interval(variant_values, baseline_values, paired=False,
                       n_resamples=DEFAULT_RESAMPLES, seed=0, confidence=0.95):
    """Percentile bootstrap interval of mean(variant) - mean(baseline) per column.

    Each resample draws the members of each set with replacement (independently;
    with `paired`, the pairs: row i of both sets together), from
    `numpy.random.default_rng(seed)`. Returns (low, high), NaN for a column with a
    NaN value or a set without members.
    """
    if paired:
        variant_values, baseline_values = _paired_sets(variant_values, baseline_values,
                                                       "bootstrap_interval")
    else:
        variant_values, baseline_values = _two_sets(variant_values, baseline_values,
                                                    "bootstrap_interval")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n_columns = variant_values.shape[1]
    if min(len(variant_values), len(baseline_values)) == 0:
        return _undefined(n_columns)
    rng = np.random.default_rng(seed)

    def resampled_means(values, weights=None):
        n = len(values)
        if weights is None:
            # How often each member is drawn in each resample: a (resamples x members)
            # matrix, so one product gives every resample's mean (no resamples x
            # members x classes array).
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples) / n
        with np.errstate(invalid="ignore"):
            # (columns x resamples): each column's resamples in contiguous memory.
            return values.T @ weights.T, weights

    variant_means, weights = resampled_means(variant_values)
    baseline_means, _ = resampled_means(baseline_values, weights if paired else None)
    tail = 100 * (1 - confidence) / 2
    with np.errstate(invalid="ignore"):  # columns with inf or NaN: made NaN below
        variant_means -= baseline_means  # the differences, in place (80 MB at ImageNet scale)
        low, high = percentiles(variant_means, [tail, 100 - tail], overwrite=True)
    finite = np.isfinite(variant_values).all(axis=0) & np.isfinite(baseline_values).all(axis=0)
    low[~finite] = high[~finite] = np.nan
    return low, high


def standard_error(variant_values, baseline_values, paired=False):
    """(standard error of the difference of the means, degrees of freedom) per column.

    Welch's (Welch-Satterthwaite degrees of freedom) for independent sets; the
    standard error of the mean difference (n - 1 degrees of freedom) when paired.
    NaN with fewer than 2 members (pairs).
    """
    if paired:
        variant_values, baseline_values = _paired_sets(variant_values, baseline_values,
                                                       "standard_error")
        n = len(variant_values)
        if n < 2:
            return _undefined(variant_values.shape[1])
        spread = np.std(variant_values - baseline_values, axis=0, ddof=1)
        return spread / np.sqrt(n), np.full(variant_values.shape[1], n - 1.0)
    variant_values, baseline_values = _two_sets(variant_values, baseline_values,
                                                "standard_error")
    n_v, n_b = len(variant_values), len(baseline_values)
    if min(n_v, n_b) < 2:
        return _undefined(variant_values.shape[1])
    share_v = np.var(variant_values, axis=0, ddof=1) / n_v
    share_b = np.var(baseline_values, axis=0, ddof=1) / n_b
    variance = share_v + share_b
    with np.errstate(divide="ignore", invalid="ignore"):
        df = variance ** 2 / (share_v ** 2 / (n_v - 1) + share_b ** 2 / (n_b - 1))
    return np.sqrt(variance), df


def t_interval(difference, standard_error_value, df, confidence=0.95):
    """(low, high) = difference -+ t_(1-(1-confidence)/2, df) x standard error, per column.

    With Welch's standard error and Welch-Satterthwaite df (`standard_error`) this is
    the interval that inverts Welch's test, with the paired ones the paired t-test's:
    at confidence 1 - alpha it excludes 0 exactly when the test's p <= alpha. NaN
    where the standard error or df is not finite and positive.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    difference = np.asarray(difference, np.float64)
    error = np.asarray(standard_error_value, np.float64)
    df = np.asarray(df, np.float64)
    usable = np.isfinite(error) & (error > 0) & np.isfinite(df) & (df > 0)
    with np.errstate(invalid="ignore"):
        critical = _scipy_special().stdtrit(np.where(usable, df, 1.0), 0.5 + confidence / 2)
    half = np.where(usable, critical * np.where(usable, error, 0.0), np.nan)
    return difference - half, difference + half


def interval_of_test(variant_values, baseline_values, test="welch", confidence=0.95):
    """The interval of mean(variant) - mean(baseline) that inverts `test`, per column.

    welch: Welch-Satterthwaite t interval; paired: paired t interval; permutation:
    none (NaN: a permutation test of the difference tests exchangeability, and its
    p-value belongs to no fixed interval). NaN where the test is undefined (fewer
    than 2 members, no spread), so an interval never contradicts its p-value.
    """
    if test not in TESTS:
        raise ValueError(f"test {test!r} is not allowed: use one of {list(TESTS)}")
    paired = test == "paired"
    if paired:
        variant_values, baseline_values = _paired_sets(variant_values, baseline_values,
                                                       "interval_of_test")
    else:
        variant_values, baseline_values = _two_sets(variant_values, baseline_values,
                                                    "interval_of_test")
    n_columns = variant_values.shape[1]
    if test == "permutation" or min(len(variant_values), len(baseline_values)) < 2:
        return _undefined(n_columns)
    difference = (np.mean(variant_values - baseline_values, axis=0) if paired else
                  _mean_difference(variant_values, baseline_values, 0))
    error, df = standard_error(variant_values, baseline_values, paired)
    low, high = t_interval(difference, error, df, confidence)
    flat = no_spread(variant_values, baseline_values, test)
    low[flat] = high[flat] = np.nan
    return low, high


INTERVAL_METHODS = {"welch": "welch_t", "paired": "paired_t", "permutation": "none"}


def clustered_origin_slope(xy_sums, xx_sums, confidence=0.95):
    """Slope of y = b x through the origin and its interval, clusters resampled whole.

    `xy_sums`, `xx_sums`: arrays (..., clusters) of each cluster's sum of x y and of
    x^2 (a cluster: the points of one seed). slope = sum(xy) / sum(xx), the least-
    squares slope of all points. Its standard error is the cluster-robust one,
    sqrt(k / (k - 1) sum_s (xy_s - slope xx_s)^2) / sum(xx) over the k clusters, with
    k - 1 degrees of freedom: when every cluster has the same x values this is
    exactly the t interval of the per-cluster slopes' mean. Returns (slope, low,
    high) over the leading axes; NaN intervals with fewer than 2 clusters.
    """
    xy_sums = np.asarray(xy_sums, np.float64)
    xx_sums = np.asarray(xx_sums, np.float64)
    k = xy_sums.shape[-1]
    total = xx_sums.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = xy_sums.sum(axis=-1) / total
        if k < 2:
            nan = np.full(slope.shape, np.nan)
            return slope, nan, nan.copy()
        residual = xy_sums - slope[..., None] * xx_sums
        error = np.sqrt(k / (k - 1) * np.sum(residual ** 2, axis=-1)) / total
    low, high = t_interval(slope, error, np.full(slope.shape, k - 1.0), confidence)
    exact = np.isfinite(error) & (error == 0)  # points exactly on a line
    low = np.where(exact, slope, low)
    high = np.where(exact, slope, high)
    return slope, low, high


def min_detectable_delta(standard_error_value, df, alpha=0.05, power=0.8):
    """Smallest true difference a two-sided t-test at `alpha` detects with `power`.

    Solves P(|T| > t_(1-alpha/2, df)) = power for T ~ noncentral t(df, d / se) and
    returns d. NaN when the standard error or df is not finite and positive.
    """
    if not (np.isfinite(standard_error_value) and np.isfinite(df) and df > 0
            and standard_error_value >= 0):
        return np.nan
    if standard_error_value == 0 or power <= alpha:  # no difference already has it
        return 0.0
    special = _scipy_special()  # the functions scipy.stats.t and .nct use
    critical = special.stdtrit(df, 1 - alpha / 2)

    def shortfall(noncentrality):
        # The far tail is negligible and the noncentral t can return NaN for it.
        far = np.nan_to_num(special.nctdtr(df, noncentrality, -critical))
        return 1 - special.nctdtr(df, noncentrality, critical) + far - power

    upper = 1.0
    while shortfall(upper) < 0 and upper < 1e6:
        upper *= 2
    return float(_scipy_optimize().brentq(shortfall, 0.0, upper, xtol=1e-10) * standard_error_value)


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


def compare(variant_values, baseline_values, test="welch", n_resamples=DEFAULT_RESAMPLES,
            seed=0):
    """(t_statistic, p_value, no_spread) of `test` per column.

    The t-statistic is Welch's for welch and permutation (shown for scale; the
    permutation p-value is for the difference of the means), the paired t for paired.
    """
    if test not in TESTS:
        raise ValueError(f"test {test!r} is not allowed: use one of {list(TESTS)}")
    if test == "paired":
        t_statistic, p_value = paired_t_test(variant_values, baseline_values)
    else:
        t_statistic, p_value = welch_t_test(variant_values, baseline_values)
        if test == "permutation":
            _, p_value = permutation_test(variant_values, baseline_values, n_resamples, seed)
    return t_statistic, p_value, no_spread(variant_values, baseline_values, test)
