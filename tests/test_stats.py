"""Tests of pie.analysis.stats: the tests over columns, intervals, power, Benjamini-Hochberg."""
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pie.analysis import stats


class TestBenjaminiHochberg:

    def test_hand_example(self):
        # Sorted: 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 =
        # 0.02, 0.02, 0.04, 0.04; running minimum from the top keeps them.
        adjusted = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
        np.testing.assert_allclose(adjusted, [0.02, 0.04, 0.04, 0.02])

    def test_running_minimum_from_the_largest(self):
        # Scaled: 0.01*3=0.03, 0.02*3/2=0.03, 0.025*3/3=0.025 -> all 0.025.
        adjusted = stats.benjamini_hochberg([0.02, 0.01, 0.025])
        np.testing.assert_allclose(adjusted, [0.025, 0.025, 0.025])

    def test_nan_is_kept_and_not_counted(self):
        # m = 2: 0.01*2/1 = 0.02, 0.04*2/2 = 0.04.
        adjusted = stats.benjamini_hochberg([0.01, np.nan, 0.04])
        np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.04])

    def test_rows_are_separate_families(self):
        adjusted = stats.benjamini_hochberg(
            [[0.01, 0.04, 0.03, 0.005], [0.02, 0.01, 0.025, np.nan]])
        np.testing.assert_allclose(
            adjusted, [[0.02, 0.04, 0.04, 0.02], [0.025, 0.025, 0.025, np.nan]])

    def test_matches_scipy(self):
        p_values = np.random.default_rng(0).uniform(0, 0.2, size=50)
        np.testing.assert_allclose(
            stats.benjamini_hochberg(p_values),
            scipy_stats.false_discovery_control(p_values, method="bh"))

    def test_never_below_the_raw_p_value_nor_above_one(self):
        p_values = np.random.default_rng(1).uniform(size=(3, 40))
        adjusted = stats.benjamini_hochberg(p_values)
        assert np.all(adjusted >= p_values - 1e-12) and np.all(adjusted <= 1)

    def test_rejects_a_scalar(self):
        with pytest.raises(ValueError, match="takes an array of p-values, got a scalar"):
            stats.benjamini_hochberg(0.1)

    def test_rejects_p_outside_unit_interval(self):
        with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
            stats.benjamini_hochberg([0.1, 1.5])


class TestWelchTTest:

    def test_matches_scipy_column_by_column(self):
        rng = np.random.default_rng(0)
        variant = rng.normal(0.1, 1.0, size=(5, 4))
        baseline = rng.normal(0.0, 2.0, size=(7, 4))
        t_statistic, p_value = stats.welch_t_test(variant, baseline)
        for column in range(4):
            expected = scipy_stats.ttest_ind(
                variant[:, column], baseline[:, column], equal_var=False)
            assert t_statistic[column] == pytest.approx(expected.statistic)
            assert p_value[column] == pytest.approx(expected.pvalue)

    def test_equals_scipy_on_many_columns(self):
        rng = np.random.default_rng(3)
        variant = rng.integers(0, 20, size=(30, 300)) / 20.0  # recalls: ties, constants
        baseline = rng.integers(0, 20, size=(25, 300)) / 20.0
        variant[:, :5] = 0.5  # one set constant: still a test
        variant[0, 5] = np.nan
        t_statistic, p_value = stats.welch_t_test(variant, baseline)
        expected = scipy_stats.ttest_ind(variant, baseline, axis=0, equal_var=False)
        np.testing.assert_allclose(t_statistic, expected.statistic, rtol=1e-12)
        np.testing.assert_allclose(p_value, expected.pvalue, rtol=1e-12)
        assert np.isnan(p_value[5]) and np.isfinite(p_value[:5]).all()

    def test_positive_when_the_variant_is_higher(self):
        t_statistic, _ = stats.welch_t_test([[2.0], [2.2], [2.1]], [[1.0], [1.1], [0.9]])
        assert t_statistic[0] > 0

    def test_one_member_gives_nan(self):
        t_statistic, p_value = stats.welch_t_test([[0.5, 0.2]], [[0.1, 0.2], [0.3, 0.1]])
        assert np.isnan(t_statistic).all() and np.isnan(p_value).all()

    def test_constant_column_gives_nan_without_warnings(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t_statistic, p_value = stats.welch_t_test(
                [[1.0, 0.1], [1.0, 0.3]], [[1.0, 0.2], [1.0, 0.5]])
        assert np.isnan(t_statistic[0]) and np.isnan(p_value[0])
        assert np.isfinite(t_statistic[1])

    def test_rejects_mismatched_columns(self):
        with pytest.raises(ValueError, match="the sets have 2 and 3 columns; they must match"):
            stats.welch_t_test(np.zeros((2, 2)), np.zeros((2, 3)))

    def test_rejects_1d(self):
        with pytest.raises(ValueError, match=r"takes two 2-d arrays \(members x columns\)"):
            stats.welch_t_test(np.zeros(3), np.zeros((2, 3)))


def test_safe_ratio_is_nan_where_the_denominator_is_zero():
    ratio = stats.safe_ratio([1, 2, 0], [2, 0, 4])
    assert ratio[0] == 0.5 and np.isnan(ratio[1]) and ratio[2] == 0.0


class TestZeroVariance:

    @pytest.mark.parametrize("baseline_value", [0.3, 0.5])  # unequal and equal means
    def test_both_sets_constant_is_undefined(self, baseline_value):
        variant = np.array([[0.5, 0.1], [0.5, 0.3], [0.5, 0.2]])
        baseline = np.array([[baseline_value, 0.0], [baseline_value, 0.1],
                             [baseline_value, 0.4]])
        for test in stats.TESTS:
            t_statistic, p_value, flat = stats.compare(variant, baseline, test, 99)
            assert np.isnan(p_value[0]) and np.isnan(t_statistic[0]), test
            assert flat.tolist() == [True, False], test
            assert np.isfinite(p_value[1]), test

    def test_one_constant_set_is_still_tested(self):
        _, p_value = stats.welch_t_test([[0.5], [0.5], [0.5]], [[0.1], [0.2], [0.3]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy: constant input
            expected = scipy_stats.ttest_ind([0.5] * 3, [0.1, 0.2, 0.3], equal_var=False)
        assert p_value[0] == pytest.approx(expected.pvalue)

    def test_constant_paired_differences_are_undefined(self):
        # A copy shifted by a constant (a quantized copy, after normalisation).
        baseline = np.array([[0.1], [0.4], [0.3]])
        t_statistic, p_value = stats.paired_t_test(baseline + 0.05, baseline)
        assert np.isnan(t_statistic[0]) and np.isnan(p_value[0])


class TestPairedTTest:

    def test_matches_scipy_ttest_rel(self):
        rng = np.random.default_rng(2)
        baseline = rng.normal(size=(6, 3))
        variant = baseline + rng.normal(0.3, 0.5, size=(6, 3))
        t_statistic, p_value = stats.paired_t_test(variant, baseline)
        expected = scipy_stats.ttest_rel(variant, baseline, axis=0)
        np.testing.assert_allclose(t_statistic, expected.statistic)
        np.testing.assert_allclose(p_value, expected.pvalue)

    def test_rejects_unequal_pair_counts(self):
        with pytest.raises(ValueError, match="paired sets need one row each per pair, "
                                             "got 2 and 3 rows"):
            stats.paired_t_test(np.zeros((2, 1)), np.zeros((3, 1)))


class TestPermutationTest:

    def test_exact_matches_scipy(self):
        rng = np.random.default_rng(3)
        variant, baseline = rng.normal(0.5, 1, size=(5, 3)), rng.normal(size=(6, 3))
        assert stats.n_splits(5, 6) == 462  # <= 9999: exact, no randomness
        difference, p_value = stats.permutation_test(variant, baseline)
        for column in range(3):
            expected = scipy_stats.permutation_test(
                (variant[:, column], baseline[:, column]),
                lambda x, y: np.mean(x) - np.mean(y), n_resamples=9999)
            assert p_value[column] == pytest.approx(expected.pvalue)
            assert difference[column] == pytest.approx(
                variant[:, column].mean() - baseline[:, column].mean())

    def test_monte_carlo_is_seeded_and_agrees_with_scipy(self):
        rng = np.random.default_rng(4)
        variant, baseline = rng.normal(0.6, 1, size=(12, 2)), rng.normal(size=(12, 2))
        assert stats.n_splits(12, 12) > 2000  # Monte-Carlo with 2000 resamples
        _, first = stats.permutation_test(variant, baseline, 2000, seed=7)
        _, again = stats.permutation_test(variant, baseline, 2000, seed=7)
        np.testing.assert_array_equal(first, again)
        expected = scipy_stats.permutation_test(
            (variant, baseline), lambda x, y, axis: np.mean(x, axis) - np.mean(y, axis),
            vectorized=True, n_resamples=2000, rng=np.random.default_rng(7))
        np.testing.assert_allclose(first, expected.pvalue)
        exact_like = scipy_stats.permutation_test(
            (variant, baseline), lambda x, y, axis: np.mean(x, axis) - np.mean(y, axis),
            vectorized=True, n_resamples=50000, rng=np.random.default_rng(1))
        np.testing.assert_allclose(first, exact_like.pvalue, atol=0.03)

    def test_column_with_nan_is_nan(self):
        _, p_value = stats.permutation_test([[np.nan, 1.0], [np.nan, 2.0]],
                                            [[np.nan, 0.0], [np.nan, 0.5]])
        assert np.isnan(p_value[0]) and np.isfinite(p_value[1])


class TestPercentiles:

    @pytest.mark.parametrize("shape", [(40, 9999), (7, 2), (3, 1), (5, 101)])
    def test_equal_to_numpy_percentile(self, shape):
        rng = np.random.default_rng(shape[1])
        for rows in (rng.normal(size=shape), rng.integers(0, 4, shape) / 30.0):
            percents = [0, 2.5, 25, 50, 97.5, 100, 100 / 3]
            expected = np.percentile(rows, percents, axis=1)
            kept = rows.copy()
            np.testing.assert_array_equal(stats.percentiles(rows, percents), expected)
            np.testing.assert_array_equal(rows, kept)
            np.testing.assert_array_equal(stats.percentiles(rows, percents, overwrite=True),
                                          expected)


class TestBootstrapInterval:

    def test_agrees_with_scipy_percentile_bootstrap(self):
        rng = np.random.default_rng(5)
        variant, baseline = rng.normal(1.0, 1, size=(20, 1)), rng.normal(size=(25, 1))
        low, high = stats.bootstrap_interval(variant, baseline, n_resamples=20000, seed=0)
        expected = scipy_stats.bootstrap(
            (variant[:, 0], baseline[:, 0]), lambda x, y: np.mean(x) - np.mean(y),
            n_resamples=20000, method="percentile", rng=np.random.default_rng(1),
            vectorized=False).confidence_interval
        # Two Monte-Carlo estimates of the same quantiles.
        assert low[0] == pytest.approx(expected.low, abs=0.05)
        assert high[0] == pytest.approx(expected.high, abs=0.05)

    def test_paired_resamples_pairs(self):
        # Differences constant: every paired resample gives the same difference.
        baseline = np.array([[0.1], [0.9], [0.4], [0.6]])
        low, high = stats.bootstrap_interval(baseline + 0.2, baseline, paired=True, seed=0)
        assert low[0] == pytest.approx(0.2) and high[0] == pytest.approx(0.2)
        low, high = stats.bootstrap_interval(baseline + 0.2, baseline, seed=0)
        assert low[0] < 0.2 < high[0]  # unpaired, the spread between members shows

    def test_seeded(self):
        values = np.random.default_rng(6).normal(size=(8, 3))
        first = stats.bootstrap_interval(values[:4], values[4:], seed=11)
        np.testing.assert_array_equal(first, stats.bootstrap_interval(values[:4], values[4:],
                                                                      seed=11))


class TestMinDetectableDelta:

    def test_power_at_the_answer_is_the_asked_power(self):
        delta = stats.min_detectable_delta(0.02, 8.0, alpha=0.05, power=0.8)
        critical = scipy_stats.t.ppf(0.975, 8.0)
        nc = delta / 0.02
        power = scipy_stats.nct.sf(critical, 8.0, nc) + scipy_stats.nct.cdf(-critical, 8.0, nc)
        assert power == pytest.approx(0.8, abs=1e-6)

    def test_large_samples_approach_the_normal_formula(self):
        delta = stats.min_detectable_delta(1.0, 1e5)
        z = scipy_stats.norm.ppf
        assert delta == pytest.approx(z(0.975) + z(0.8), rel=1e-3)

    def test_undefined_spread_is_nan(self):
        assert np.isnan(stats.min_detectable_delta(np.nan, 4.0))

    def test_power_not_above_alpha_needs_no_difference(self):
        # With no difference the test already rejects with probability alpha.
        assert stats.min_detectable_delta(0.02, 3.7, alpha=0.05, power=0.05) == 0.0


class TestIntervalCoverage:
    """The intervals that replace the bootstraps cover the truth >= 94% at n = 10.

    Simulated many times at once (columns), so each check takes a fraction of a second.
    """
    N, SIMULATIONS = 10, 4000

    def covered(self, low, high, truth):
        return np.mean((low <= truth) & (truth <= high))

    def test_welch_interval_with_unequal_spreads(self):
        rng = np.random.default_rng(0)
        variant = rng.normal(0.3, 2.0, (self.N, self.SIMULATIONS))
        baseline = rng.normal(0.0, 0.5, (self.N, self.SIMULATIONS))
        low, high = stats.interval_of_test(variant, baseline, "welch")
        assert self.covered(low, high, 0.3) >= 0.94

    def test_paired_interval_with_seed_effects(self):
        rng = np.random.default_rng(1)
        seed_effect = rng.normal(0, 1.0, (self.N, self.SIMULATIONS))  # shared by a pair
        variant = seed_effect + rng.normal(-0.2, 0.3, (self.N, self.SIMULATIONS))
        baseline = seed_effect + rng.normal(0.0, 0.3, (self.N, self.SIMULATIONS))
        low, high = stats.interval_of_test(variant, baseline, "paired")
        assert self.covered(low, high, -0.2) >= 0.94

    def test_seed_clustered_slope_through_the_origin(self):
        # Three sparsities per seed, errors correlated within a seed (a shared dense
        # reference): resampling points would understate the spread.
        rng = np.random.default_rng(2)
        x = np.array([0.5, 0.8, 0.95])
        slope = 3.0
        seed_slope = slope + rng.normal(0, 1.5, (self.SIMULATIONS, self.N, 1))
        y = seed_slope * x + rng.normal(0, 0.4, (self.SIMULATIONS, self.N, 3))
        _, low, high = stats.clustered_origin_slope((x * y).sum(-1),
                                                    np.broadcast_to((x * x).sum(), (
                                                        self.SIMULATIONS, self.N)))
        assert self.covered(low, high, slope) >= 0.94

    def test_intervals_exclude_zero_exactly_when_p_at_most_005(self):
        rng = np.random.default_rng(3)
        variant = rng.normal(0.4, 1.0, (6, 2000))
        baseline = rng.normal(0.0, 1.0, (6, 2000))
        for test, function in (("welch", stats.welch_t_test), ("paired", stats.paired_t_test)):
            _, p_value = function(variant, baseline)
            low, high = stats.interval_of_test(variant, baseline, test)
            np.testing.assert_array_equal((low > 0) | (high < 0), p_value <= 0.05)

    def test_clustered_slope_equals_the_t_interval_of_per_seed_slopes(self):
        rng = np.random.default_rng(4)
        x = np.array([0.5, 0.9])
        y = rng.normal(2.0, 1.0, (5, 2)) * x
        slope, low, high = stats.clustered_origin_slope((x * y).sum(1), np.full(5, (x * x).sum()))
        per_seed = (x * y).sum(1) / (x * x).sum()
        expected = scipy_stats.ttest_1samp(per_seed, 0).confidence_interval()
        assert slope == pytest.approx(per_seed.mean())
        assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
