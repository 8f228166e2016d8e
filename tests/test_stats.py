"""Tests of pie.analysis.stats: Welch's t-test over columns and Benjamini-Hochberg."""
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
