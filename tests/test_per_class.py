"""Tests of pie.analysis.per_class: per-class metrics and the per-class t-test."""
import logging
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pie.analysis import per_class
from pie.io import records


def manifest_of(members):
    """A manifest frame from (member_id, method, sparsity, seed) tuples."""
    return pd.DataFrame(members, columns=["member_id", "method", "sparsity", "seed"])


def metrics_of(recalls, top1, seeds=None):
    """Metrics rows from {member_id: (method, sparsity, [recall per class])}."""
    rows = []
    for member_id, (method, sparsity, recall) in recalls.items():
        for class_id, value in enumerate(recall):
            rows.append({"member_id": member_id, "method": method, "sparsity": sparsity,
                         "seed": (seeds or {}).get(member_id, 0), "class_id": class_id, "class_name": f"c{class_id}",
                         "n": 10, "correct": 0, "recall": value, "precision": 0.0,
                         "member_top1": top1[member_id]})
    return pd.DataFrame(rows)


class TestClassCounts:

    def test_hand_table(self):
        # member 0: labels 0 0 1 2, predicted 0 1 1 1; member 1: labels 2 2, predicted 2 0.
        n, correct, n_predicted = per_class.class_counts(
            member=[0, 0, 0, 0, 1, 1], label=[0, 0, 1, 2, 2, 2],
            predicted=[0, 1, 1, 1, 2, 0], n_members=2, n_classes=3)
        np.testing.assert_array_equal(n, [[2, 1, 1], [0, 0, 2]])
        np.testing.assert_array_equal(correct, [[1, 1, 0], [0, 0, 1]])
        np.testing.assert_array_equal(n_predicted, [[1, 3, 0], [1, 0, 1]])

    def test_rejects_mismatched_shapes(self):
        with pytest.raises(ValueError, match="member, label and predicted must have one shape"):
            per_class.class_counts([0, 0], [1], [1, 1], n_members=1, n_classes=2)


class TestPerClassMetrics:

    def test_hand_table(self):
        manifest = manifest_of([("a", "dense", 0.0, 1), ("b", "magnitude", 0.5, 2)])
        predictions = pd.DataFrame({
            "member": [0, 0, 0, 0, 1, 1, 1, 1],
            "label": [0, 0, 1, 2, 0, 0, 1, 2],
            "predicted": [0, 1, 1, 1, 0, 0, 0, 0],
        })
        metrics = per_class.per_class_metrics(predictions, manifest, ["cat", "dog", "eel"])
        assert list(metrics.columns) == per_class.METRICS_COLUMNS
        assert list(metrics["member_id"]) == ["a"] * 3 + ["b"] * 3
        assert list(metrics["class_name"]) == ["cat", "dog", "eel"] * 2
        assert list(metrics["seed"]) == [1] * 3 + [2] * 3
        np.testing.assert_array_equal(metrics["n"], [2, 1, 1, 2, 1, 1])
        np.testing.assert_array_equal(metrics["correct"], [1, 1, 0, 2, 0, 0])
        np.testing.assert_allclose(metrics["recall"], [0.5, 1.0, 0.0, 1.0, 0.0, 0.0])
        # a predicts cat once (right), dog 3 times (1 right), never eel: NaN.
        # b predicts cat 4 times (2 right), never dog nor eel.
        np.testing.assert_allclose(metrics["precision"],
                                   [1.0, 1 / 3, np.nan, 0.5, np.nan, np.nan])
        np.testing.assert_allclose(metrics["member_top1"], [0.5] * 3 + [0.5] * 3)

    def test_class_without_images_has_nan_recall(self):
        manifest = manifest_of([("a", "dense", 0.0, 0)])
        predictions = pd.DataFrame({"member": [0, 0], "label": [0, 0], "predicted": [0, 1]})
        metrics = per_class.per_class_metrics(predictions, manifest, ["x", "y"])
        assert metrics["recall"].iloc[0] == 0.5 and np.isnan(metrics["recall"].iloc[1])
        assert metrics["precision"].iloc[1] == 0.0  # predicted once, never right


class TestReadMetrics:

    def test_round_trip_keeps_names_and_nan(self, tmp_path):
        manifest = manifest_of([("a", "dense", 0.0, 0)])
        predictions = pd.DataFrame({"member": [0, 0], "label": [0, 1], "predicted": [0, 0]})
        metrics = per_class.per_class_metrics(predictions, manifest, ["NA", "007"])
        path = str(tmp_path / "m.csv")
        records.write_csv(path, metrics, per_class.METRICS_COLUMNS)
        read = per_class.read_metrics(path)
        assert list(read["class_name"]) == ["NA", "007"]
        pd.testing.assert_series_equal(read["precision"], metrics["precision"])

    def test_missing_file(self, tmp_path):
        with pytest.raises(records.ContractError, match="missing input file"):
            per_class.read_metrics(str(tmp_path / "absent.csv"))

    def test_cut_file_names_the_stage_to_rerun(self, tmp_path):
        manifest = manifest_of([("a", "dense", 0.0, 0)])
        predictions = pd.DataFrame({"member": [0, 0], "label": [0, 1], "predicted": [0, 0]})
        path = per_class.metrics_path(str(tmp_path))
        records.write_csv(path, per_class.per_class_metrics(predictions, manifest, ["x", "y"]),
                          per_class.METRICS_COLUMNS)
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(data[:-20])
        with pytest.raises(records.ContractError, match=(
                rf"per_class_metrics.csv changed after per_class_accuracy.aggregate_ckpt_metrics "
                rf"wrote it \(2 rows, {len(data)} bytes; now {len(data) - 20} bytes\): truncated "
                r"or edited\? rerun per_class_accuracy.aggregate_ckpt_metrics$")):
            per_class.read_metrics(path)


class TestPerClassTStatistic:
    # Two classes; dense d1..d3 and magnitude 0.5 v1..v3, recall and top-1 chosen by hand.
    RECALLS = {
        "d1": ("dense", 0.0, [0.80, 0.60]), "d2": ("dense", 0.0, [0.70, 0.65]),
        "d3": ("dense", 0.0, [0.75, 0.70]),
        "v1": ("magnitude", 0.5, [0.50, 0.66]), "v2": ("magnitude", 0.5, [0.45, 0.64]),
        "v3": ("magnitude", 0.5, [0.55, 0.69]),
    }
    TOP1 = {"d1": 0.70, "d2": 0.68, "d3": 0.72, "v1": 0.60, "v2": 0.58, "v3": 0.62}

    def test_matches_scipy_on_normalised_sets(self):
        table, summary = per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1),
                                                        correction="none")
        assert list(table.columns) == per_class.TSTATISTIC_COLUMNS
        dense_top1 = np.mean([0.70, 0.68, 0.72])
        variant_top1 = np.mean([0.60, 0.58, 0.62])
        for class_id in (0, 1):
            baseline = [self.RECALLS[m][2][class_id] - dense_top1 for m in ("d1", "d2", "d3")]
            variant = [self.RECALLS[m][2][class_id] - variant_top1 for m in ("v1", "v2", "v3")]
            expected = scipy_stats.ttest_ind(variant, baseline, equal_var=False)
            row = table.iloc[class_id]
            assert row["class_id"] == class_id and row["class_name"] == f"c{class_id}"
            assert row["t_statistic"] == pytest.approx(expected.statistic)
            assert row["p_value"] == pytest.approx(expected.pvalue)
            assert row["normalized_delta"] == pytest.approx(np.mean(variant) - np.mean(baseline))
            assert row["baseline_mean_top1"] == pytest.approx(dense_top1)
            assert row["variant_mean_top1"] == pytest.approx(variant_top1)
            assert row["baseline_mean_recall"] == pytest.approx(
                np.mean([self.RECALLS[m][2][class_id] for m in ("d1", "d2", "d3")]))
        # Class 0 loses 0.25 of recall for 0.10 of top-1: hurt and significant;
        # class 1 keeps its recall while top-1 drops: helped.
        assert list(table["direction"]) == ["hurt", "helped"]
        assert table["significant"].iloc[0]
        record = summary[["method", "sparsity", "n_baseline", "n_variant", "n_pairs",
                          "baseline_mean_top1", "variant_mean_top1", "test", "correction",
                          "n_classes_tested", "n_classes_hurt",
                          "n_classes_helped"]].to_dict("records")
        assert record == [{
            "method": "magnitude", "sparsity": 0.5, "n_baseline": 3, "n_variant": 3,
            "n_pairs": 0, "baseline_mean_top1": pytest.approx(dense_top1),
            "variant_mean_top1": pytest.approx(variant_top1), "test": "welch",
            "correction": "none", "n_classes_tested": 2,
            "n_classes_hurt": 1, "n_classes_helped": int(table["significant"].iloc[1])}]
        assert summary["rule"].iloc[0] == "Welch's t-test: p_value <= 0.05, no correction"
        # Raw recall change beside the normalised one: class 0 lost 0.25 of recall.
        assert table["recall_change"].iloc[0] == pytest.approx(0.50 - 0.75)
        assert summary["recall_change_hurt"].iloc[0] == pytest.approx(-0.25)
        np.testing.assert_allclose(table["effect_points"], 100 * table["normalized_delta"])

    def test_bh_column_and_correction_rule(self):
        metrics = metrics_of(self.RECALLS, self.TOP1)
        table, _ = per_class.per_class_tstatistic(metrics, alpha=0.05, correction="bh")
        p_value = table["p_value"].to_numpy()
        expected_bh = scipy_stats.false_discovery_control(p_value, method="bh")
        np.testing.assert_allclose(table["p_value_bh"], expected_bh)
        np.testing.assert_array_equal(table["significant"], expected_bh <= 0.05)
        table_none, _ = per_class.per_class_tstatistic(metrics, alpha=0.05, correction="none")
        np.testing.assert_array_equal(table_none["significant"], p_value <= 0.05)
        # The default is bh; the uncorrected decision is kept beside it.
        default, summary = per_class.per_class_tstatistic(metrics, alpha=0.05)
        pd.testing.assert_frame_equal(default, table)
        np.testing.assert_array_equal(default["significant_uncorrected"], p_value <= 0.05)
        assert summary["n_classes_hurt_uncorrected"].iloc[0] == int(
            ((p_value <= 0.05) & (default["direction"] == "hurt")).sum())

    def test_one_member_variant_is_nan_and_warned(self, caplog):
        recalls = dict(self.RECALLS, q1=("quant_int8", 0.0, [0.7, 0.7]))
        top1 = dict(self.TOP1, q1=0.7)
        with caplog.at_level(logging.WARNING):
            table, summary = per_class.per_class_tstatistic(metrics_of(recalls, top1))
        quant = table[table["method"] == "quant_int8"]
        assert quant["t_statistic"].isna().all() and quant["p_value"].isna().all()
        assert quant["p_value_bh"].isna().all() and not quant["significant"].any()
        assert "variant quant_int8_0 has 1 member: its test is undefined" in caplog.text
        # The other variant is still tested.
        assert table[table["method"] == "magnitude"]["p_value"].notna().all()
        assert list(summary["n_variant"]) == [3, 1]

    def test_rows_sorted_by_method_sparsity_class(self):
        recalls = dict(self.RECALLS)
        recalls.update({"w1": ("magnitude", 0.1, [0.7, 0.6]), "w2": ("magnitude", 0.1, [0.8, 0.6])})
        top1 = dict(self.TOP1, w1=0.7, w2=0.7)
        table, summary = per_class.per_class_tstatistic(metrics_of(recalls, top1))
        assert list(zip(table["sparsity"], table["class_id"])) == [
            (0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]
        assert list(summary["sparsity"]) == [0.1, 0.5]

    def test_missing_dense_population(self):
        recalls = {k: v for k, v in self.RECALLS.items() if v[0] != "dense"}
        with pytest.raises(records.ContractError,
                           match=r"no dense population \(method == 'dense'\)"):
            per_class.per_class_tstatistic(metrics_of(recalls, self.TOP1))

    def test_only_dense_gives_empty_tables(self):
        recalls = {k: v for k, v in self.RECALLS.items() if v[0] == "dense"}
        table, summary = per_class.per_class_tstatistic(metrics_of(recalls, self.TOP1))
        assert table.empty and list(table.columns) == per_class.TSTATISTIC_COLUMNS
        assert summary.empty and list(summary.columns) == per_class.SUMMARY_COLUMNS

    def test_incomplete_grid(self):
        metrics = metrics_of(self.RECALLS, self.TOP1).iloc[1:]
        with pytest.raises(records.ContractError,
                           match="one row per member and class, for the same classes"):
            per_class.per_class_tstatistic(metrics)

    @pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
    def test_rejects_alpha(self, alpha):
        with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
            per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1), alpha=alpha)

    def test_rejects_correction(self):
        with pytest.raises(ValueError,
                           match=r"correction 'holm' is not allowed: use one of "
                                 r"\['none', 'bh', 'bh_all'\]"):
            per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1),
                                           correction="holm")


class TestDesigns:
    """Zero variance, paired and permutation tests, bh_all, intervals, power."""
    # Class 0 varies; class 1 is right for every member (recall 1.0 everywhere).
    RECALLS = {
        "d1": ("dense", 0.0, [0.80, 1.0, 0.5]), "d2": ("dense", 0.0, [0.70, 1.0, 0.6]),
        "d3": ("dense", 0.0, [0.75, 1.0, 0.4]), "d4": ("dense", 0.0, [0.72, 1.0, 0.5]),
        "v1": ("magnitude", 0.5, [0.50, 1.0, 0.45]), "v2": ("magnitude", 0.5, [0.45, 1.0, 0.6]),
        "v3": ("magnitude", 0.5, [0.58, 1.0, 0.35]), "v4": ("magnitude", 0.5, [0.52, 1.0, 0.5]),
        "q1": ("quant_int8", 0.0, [0.79, 1.0, 0.5]), "q2": ("quant_int8", 0.0, [0.71, 1.0, 0.6]),
        "q3": ("quant_int8", 0.0, [0.75, 1.0, 0.41]), "q4": ("quant_int8", 0.0, [0.70, 1.0, 0.5]),
    }
    TOP1 = {"d1": 0.70, "d2": 0.68, "d3": 0.72, "d4": 0.71, "v1": 0.60, "v2": 0.58,
            "v3": 0.62, "v4": 0.61, "q1": 0.70, "q2": 0.67, "q3": 0.72, "q4": 0.70}
    SEEDS = {m: int(m[1]) for m in RECALLS}

    def metrics(self, top1=None):
        return metrics_of(self.RECALLS, top1 or self.TOP1, self.SEEDS)

    def normalised(self, members, class_id, top1=None):
        top1 = top1 or self.TOP1
        mean = np.mean([top1[m] for m in members])
        return np.array([self.RECALLS[m][2][class_id] - mean for m in members])

    @pytest.mark.parametrize("test", ["welch", "paired", "permutation"])
    @pytest.mark.parametrize("equal_means", [False, True])
    def test_zero_variance_class_is_never_significant(self, test, equal_means):
        top1 = ({m: 0.7 for m in self.TOP1} if equal_means else self.TOP1)
        table, summary = per_class.per_class_tstatistic(
            metrics_of(self.RECALLS, top1, self.SEEDS), test=test, resamples=999)
        flat = table[table["class_id"] == 1]
        # Every member has recall 1.0: the normalised values are constant in each set.
        assert flat["p_value"].isna().all() and flat["t_statistic"].isna().all()
        assert not flat["significant"].any()
        assert set(flat["direction"]) == {per_class.NO_SPREAD}
        if not equal_means:  # the magnitude variant's mean top-1 is 0.1 lower
            magnitude = flat[flat["method"] == "magnitude"]
            assert magnitude["normalized_delta"].iloc[0] == pytest.approx(0.1)
        assert list(summary["n_classes_tested"]) == [2, 2]

    def test_paired_matches_scipy_ttest_rel(self):
        table, summary = per_class.per_class_tstatistic(self.metrics(), test="paired")
        dense, variant = ["d1", "d2", "d3", "d4"], ["v1", "v2", "v3", "v4"]
        for class_id in (0, 2):
            expected = scipy_stats.ttest_rel(self.normalised(variant, class_id),
                                             self.normalised(dense, class_id))
            row = table[(table["method"] == "magnitude") & (table["class_id"] == class_id)]
            assert row["t_statistic"].item() == pytest.approx(expected.statistic)
            assert row["p_value"].item() == pytest.approx(expected.pvalue)
        assert set(table["test"]) == {"paired"}
        assert list(summary["n_pairs"]) == [4, 4]
        assert summary["rule"].iloc[0].startswith("paired t-test (members paired by seed)")

    def test_paired_sees_what_welch_misses_in_quantized_copies(self):
        # q_i is d_i give or take 0.01: paired differences are small and consistent.
        paired, _ = per_class.per_class_tstatistic(self.metrics(), test="paired")
        welch, _ = per_class.per_class_tstatistic(self.metrics())
        quant = lambda t: t[(t["method"] == "quant_int8") & (t["class_id"] == 0)]
        assert quant(paired)["p_value"].item() < quant(welch)["p_value"].item()

    def test_paired_pairs_by_seed_not_by_row_order(self):
        seeds = dict(self.SEEDS, v1=2, v2=1)  # v1 belongs with d2, v2 with d1
        table, _ = per_class.per_class_tstatistic(
            metrics_of(self.RECALLS, self.TOP1, seeds), test="paired")
        expected = scipy_stats.ttest_rel(self.normalised(["v2", "v1", "v3", "v4"], 0),
                                         self.normalised(["d1", "d2", "d3", "d4"], 0))
        row = table[(table["method"] == "magnitude") & (table["class_id"] == 0)]
        assert row["p_value"].item() == pytest.approx(expected.pvalue)

    def test_paired_without_matching_seeds_is_a_usage_error(self):
        seeds = dict(self.SEEDS, v4=9)
        with pytest.raises(per_class.errors.UsageError, match=re.escape(
                "--test=paired needs a dense member of the same seed for every member of "
                "magnitude_0.5, but seeds [9] have none (dense seeds [1, 2, 3, 4]); use "
                "--test=welch")):
            per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1, seeds),
                                           test="paired")

    def test_permutation_matches_scipy_exactly(self):
        # 4 + 4 members: 70 splits, fewer than the resamples, so the test is exact.
        table, _ = per_class.per_class_tstatistic(self.metrics(), test="permutation")
        dense, variant = ["d1", "d2", "d3", "d4"], ["v1", "v2", "v3", "v4"]
        for class_id in (0, 2):
            expected = scipy_stats.permutation_test(
                (self.normalised(variant, class_id), self.normalised(dense, class_id)),
                lambda x, y: np.mean(x) - np.mean(y), n_resamples=9999)
            row = table[(table["method"] == "magnitude") & (table["class_id"] == class_id)]
            assert row["p_value"].item() == pytest.approx(expected.pvalue)
        # Exactly: the observed split is the most extreme of 70, both tails.
        row = table[(table["method"] == "magnitude") & (table["class_id"] == 0)]
        assert row["p_value"].item() == pytest.approx(2 / 70)

    def test_bh_all_equals_scipy_over_every_row(self):
        table, summary = per_class.per_class_tstatistic(self.metrics(), correction="bh_all")
        p_value = table["p_value"].to_numpy()
        defined = ~np.isnan(p_value)
        expected = scipy_stats.false_discovery_control(p_value[defined], method="bh")
        np.testing.assert_allclose(table["p_value_bh"].to_numpy()[defined], expected)
        assert table["p_value_bh"][~defined].isna().all()
        np.testing.assert_array_equal(table["significant"].to_numpy()[defined],
                                      expected <= 0.05)
        assert summary["rule"].iloc[0] == (
            "Welch's t-test: p_value_bh <= 0.05, Benjamini-Hochberg over all 4 tests of "
            "the study (every variant x class)")

    def test_decide_over_several_tables_is_one_family(self):
        first, first_summary = per_class.compare_variants(self.metrics())
        second, second_summary = per_class.compare_variants(self.metrics(
            {m: v - 0.01 for m, v in self.TOP1.items()}))
        both = pd.concat([first.assign(distribution="clean"),
                          second.assign(distribution="fog/3")], ignore_index=True)
        summaries = pd.concat([first_summary.assign(distribution="clean"),
                               second_summary.assign(distribution="fog/3")])
        table, summary = per_class.decide(both, summaries, 0.05, "bh_all",
                                          keys=("distribution", "method", "sparsity"))
        p_value = table["p_value"].to_numpy()
        defined = ~np.isnan(p_value)
        np.testing.assert_allclose(
            table["p_value_bh"].to_numpy()[defined],
            scipy_stats.false_discovery_control(p_value[defined], method="bh"))
        assert len(summary) == 4 and "all 8 tests" in summary["rule"].iloc[0]

    @pytest.mark.parametrize("test", ["welch", "paired"])
    def test_effect_interval_is_the_tests_own(self, test):
        table, _ = per_class.per_class_tstatistic(self.metrics(), test=test)
        dense, variant = ["d1", "d2", "d3", "d4"], ["v1", "v2", "v3", "v4"]
        for class_id in (0, 2):
            v, d = self.normalised(variant, class_id), self.normalised(dense, class_id)
            if test == "welch":
                expected = scipy_stats.ttest_ind(v, d, equal_var=False).confidence_interval()
            else:
                expected = scipy_stats.ttest_rel(v, d).confidence_interval()
            row = table[(table["method"] == "magnitude") & (table["class_id"] == class_id)]
            assert row["effect_ci_low_points"].item() == pytest.approx(100 * expected.low)
            assert row["effect_ci_high_points"].item() == pytest.approx(100 * expected.high)
        assert set(table["effect_ci_method"]) == {f"{test}_t"}
        # The constant class has no test and so no interval (not a zero-width one).
        flat = table[table["class_id"] == 1]
        assert flat["effect_ci_low_points"].isna().all()
        assert flat["effect_ci_high_points"].isna().all()

    def test_power_is_stated_per_variant(self):
        _, summary = per_class.per_class_tstatistic(self.metrics())
        magnitude = summary[summary["method"] == "magnitude"].iloc[0]
        # By hand: the median over the testable classes (not the constant one) of the
        # Welch standard error and degrees of freedom.
        errors, dfs = [], []
        for class_id in (0, 2):
            v = self.normalised(["v1", "v2", "v3", "v4"], class_id)
            d = self.normalised(["d1", "d2", "d3", "d4"], class_id)
            a, b = v.var(ddof=1) / 4, d.var(ddof=1) / 4
            errors.append(np.sqrt(a + b))
            dfs.append((a + b) ** 2 / (a ** 2 / 3 + b ** 2 / 3))
        error, df = np.median(errors), np.median(dfs)
        delta = magnitude["min_detectable_delta_points"] / 100
        critical = scipy_stats.t.ppf(0.975, df)
        power = scipy_stats.nct.sf(critical, df, delta / error)
        assert power == pytest.approx(0.8, abs=1e-4)

    def test_rejects_unknown_test(self):
        with pytest.raises(per_class.errors.UsageError, match=re.escape(
                "test 'ttest' is not allowed: use one of ['welch', 'paired', 'permutation']")):
            per_class.per_class_tstatistic(self.metrics(), test="ttest")


def counted_metrics(correct, n, populations, seeds=None):
    """Metrics rows from correct counts (members x classes) with `n` images per class,
    the members' populations [(method, sparsity)] and top-1 from the counts."""
    correct = np.asarray(correct)
    rows = []
    for m, (method, sparsity) in enumerate(populations):
        top1 = correct[m].sum() / (n * correct.shape[1])
        for class_id, right in enumerate(correct[m]):
            rows.append({"member_id": f"m{m}", "method": method, "sparsity": sparsity,
                         "seed": (seeds or list(range(len(populations))))[m],
                         "class_id": class_id, "class_name": f"c{class_id}", "n": n,
                         "correct": int(right), "recall": right / n, "precision": 0.0,
                         "member_top1": top1})
    return pd.DataFrame(rows)


class TestCeilingIntervalsPower:
    POPULATIONS = [("dense", 0.0)] * 4 + [("magnitude", 0.5)] * 4

    @pytest.mark.parametrize("test", ["welch", "paired", "permutation"])
    @pytest.mark.parametrize("correction", ["none", "bh"])
    def test_one_error_among_all_members_is_ceiling(self, test, correction):
        # Class 1: every member right but one image of one member; class 0 varies.
        correct = [[15, 20], [12, 20], [16, 20], [14, 20],
                   [8, 20], [9, 20], [7, 19], [10, 20]]
        table, summary = per_class.per_class_tstatistic(
            counted_metrics(correct, 20, self.POPULATIONS, [0, 1, 2, 3] * 2), test=test,
            correction=correction, resamples=999)
        ceiling = table[table["class_id"] == 1].iloc[0]
        assert ceiling["direction"] == per_class.CEILING and ceiling["n_errors"] == 1
        assert np.isnan(ceiling["p_value"]) and np.isnan(ceiling["t_statistic"])
        assert not ceiling["significant"] and not ceiling["significant_uncorrected"]
        assert np.isnan(ceiling["effect_ci_low_points"])
        row = summary.iloc[0]
        assert row["n_classes_ceiling"] == 1 and row["ceiling_classes"] == "c1"
        assert row["min_errors"] == 4 and row["n_classes_tested"] == 1
        # min_errors=0 tests it again (the knife edge the rule removes).
        again, _ = per_class.per_class_tstatistic(
            counted_metrics(correct, 20, self.POPULATIONS, [0, 1, 2, 3] * 2), test=test,
            correction=correction, resamples=999, min_errors=0)
        assert again[again["class_id"] == 1]["direction"].item() != per_class.CEILING

    @pytest.mark.parametrize("test", ["welch", "paired"])
    def test_interval_excludes_zero_exactly_when_p_at_most_005(self, test):
        rng = np.random.default_rng(5)
        n_classes = 200
        correct = rng.binomial(40, rng.uniform(0.5, 0.95, n_classes), size=(8, n_classes))
        correct[4:, :40] -= rng.integers(4, 12, size=(4, 40))  # some classes hurt
        correct = np.clip(correct, 0, 40)
        table, _ = per_class.per_class_tstatistic(
            counted_metrics(correct, 40, self.POPULATIONS, [0, 1, 2, 3] * 2), test=test,
            correction="none", min_errors=0)
        rows = table[table["p_value"].notna()]
        assert len(rows) > 150 and 3 < rows["significant"].sum() < len(rows)
        excludes = (rows["effect_ci_low_points"] > 0) | (rows["effect_ci_high_points"] < 0)
        np.testing.assert_array_equal(excludes.to_numpy(), (rows["p_value"] <= 0.05).to_numpy())

    def test_two_members_never_detect_beyond_what_the_measure_reaches(self):
        rng = np.random.default_rng(1)
        for _ in range(20):
            correct = rng.integers(0, 11, size=(4, 5))
            _, summary = per_class.per_class_tstatistic(
                counted_metrics(correct, 10, [("dense", 0.0)] * 2 + [("magnitude", 0.9)] * 2),
                min_errors=0)
            detectable = summary["min_detectable_delta_points"].iloc[0]
            assert np.isnan(detectable) or detectable <= 200
            assert summary["small_population"].iloc[0]

    def test_negative_min_errors_is_refused(self):
        with pytest.raises(per_class.errors.UsageError, match=re.escape(
                "min_errors must be an integer >= 0 (default: the members of the smaller "
                "population), got -1")):
            per_class.per_class_tstatistic(
                counted_metrics([[1, 2]] * 4, 2, [("dense", 0.0)] * 2 + [("m", 0.5)] * 2),
                min_errors=-1)
