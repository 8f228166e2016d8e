"""Tests of pie.analysis.per_class: per-class metrics and the per-class t-test."""
import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pie.analysis import per_class
from pie.io import records


def manifest_of(members):
    """A manifest frame from (member_id, method, sparsity, seed) tuples."""
    return pd.DataFrame(members, columns=["member_id", "method", "sparsity", "seed"])


def metrics_of(recalls, top1):
    """Metrics rows from {member_id: (method, sparsity, [recall per class])}."""
    rows = []
    for member_id, (method, sparsity, recall) in recalls.items():
        for class_id, value in enumerate(recall):
            rows.append({"member_id": member_id, "method": method, "sparsity": sparsity,
                         "seed": 0, "class_id": class_id, "class_name": f"c{class_id}",
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
        table, summary = per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1))
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
        assert summary.to_dict("records") == [{
            "method": "magnitude", "sparsity": 0.5, "n_baseline": 3, "n_variant": 3,
            "baseline_mean_top1": pytest.approx(dense_top1),
            "variant_mean_top1": pytest.approx(variant_top1),
            "n_classes_hurt": 1, "n_classes_helped": int(table["significant"].iloc[1])}]

    def test_bh_column_and_correction_rule(self):
        metrics = metrics_of(self.RECALLS, self.TOP1)
        table, _ = per_class.per_class_tstatistic(metrics, alpha=0.05, correction="bh")
        p_value = table["p_value"].to_numpy()
        expected_bh = scipy_stats.false_discovery_control(p_value, method="bh")
        np.testing.assert_allclose(table["p_value_bh"], expected_bh)
        np.testing.assert_array_equal(table["significant"], expected_bh <= 0.05)
        table_none, _ = per_class.per_class_tstatistic(metrics, alpha=0.05)
        np.testing.assert_array_equal(table_none["significant"], p_value <= 0.05)

    def test_one_member_variant_is_nan_and_warned(self, caplog):
        recalls = dict(self.RECALLS, q1=("quant_int8", 0.0, [0.7, 0.7]))
        top1 = dict(self.TOP1, q1=0.7)
        with caplog.at_level(logging.WARNING):
            table, summary = per_class.per_class_tstatistic(metrics_of(recalls, top1))
        quant = table[table["method"] == "quant_int8"]
        assert quant["t_statistic"].isna().all() and quant["p_value"].isna().all()
        assert quant["p_value_bh"].isna().all() and not quant["significant"].any()
        assert "variant quant_int8_0 has 1 member: its t-test is undefined" in caplog.text
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
                           match=r"correction 'holm' is not allowed: use one of \['none', 'bh'\]"):
            per_class.per_class_tstatistic(metrics_of(self.RECALLS, self.TOP1),
                                           correction="holm")
