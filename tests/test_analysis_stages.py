"""End-to-end tests of the three analysis stage scripts on a tiny synthetic workdir.

The stages run in-process through absl's flag parsing (fast), and twice as real
processes to check the exit code and the one-line error.
"""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from per_class_accuracy import aggregate_ckpt_metrics
from per_class_accuracy import gen_tstatistic
from pie.io import cli, errors, records
from pie_dataset_gen import aggregate_predictions
from pie.io.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CLASSES, N_IMAGES = 4, 12
POPULATIONS = [("dense", 0.0, 3), ("magnitude", 0.5, 3), ("magnitude", 0.9, 2)]


def build_workdir(workdir, populations=POPULATIONS, distribution=records.CLEAN, seed=0):
    """Manifest and predictions: accuracy about 70%, lower for sparser members."""
    rng = np.random.default_rng(seed)
    rows = []
    labels = np.arange(N_IMAGES) % N_CLASSES
    for method, sparsity, n_members in populations:
        for member_seed in range(n_members):
            member_id = f"{method}_{sparsity:g}_seed{member_seed}"
            right = rng.random(N_IMAGES) < 0.8 - sparsity / 3
            predicted = np.where(right, labels, rng.integers(0, N_CLASSES, N_IMAGES))
            prob = rng.uniform(0.3, 1.0, N_IMAGES).round(3)
            frame = pd.DataFrame({
                "member_id": member_id, "image_id": np.arange(100, 100 + N_IMAGES),
                "label": labels, "predicted": predicted, "prob_predicted": prob,
                "prob_label": np.where(predicted == labels, prob, 0.1)})
            records.write_predictions(
                Workdir(workdir).predictions_path(member_id, distribution), frame)
            rows.append({
                "member_id": member_id, "method": method, "sparsity": sparsity,
                "measured_sparsity": sparsity, "seed": member_seed, "dataset": "toy",
                "model": "mlp", "top1": float(right.mean()), "path": member_id,
                "model_file": f"{member_id}/model.keras"})
    records.add_manifest_rows(workdir, rows)


def raw_predictions(workdir, distribution=records.CLEAN):
    manifest = records.read_manifest(workdir)
    return pd.concat([
        pd.read_parquet(Workdir(workdir).predictions_path(m, distribution)).assign(
            method=method, sparsity=sparsity)
        for m, method, sparsity in manifest[["member_id", "method", "sparsity"]].itertuples(
            index=False)], ignore_index=True)


def run_main(module, workdir, *args):
    """Runs a stage's main in-process (the Python API); its exit code as `cli.run`'s.

    Bad input (pie.io.errors.InputError) becomes one `error:` line and exit code 2,
    exactly as on the command line (tests/test_train.py checks cli.run itself).
    """
    try:
        cli.call_stage_argv(module, [f"--workdir={workdir}", *args])
    except errors.InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return cli.USAGE_EXIT
    return 0


STAGES = [aggregate_ckpt_metrics, gen_tstatistic, aggregate_predictions]


def output_files(workdir):
    return sorted(os.path.join(folder, name)
                  for stage in ("per_class", "pie")
                  for folder, _, names in os.walk(os.path.join(workdir, stage))
                  for name in names)


def snapshot(paths):
    return {path: (open(path, "rb").read(), os.stat(path).st_mtime_ns) for path in paths}


class TestEndToEnd:

    @pytest.fixture
    def workdir(self, tmp_path):
        build_workdir(str(tmp_path))
        return str(tmp_path)

    def test_columns_and_rerun_changes_nothing(self, workdir):
        for stage in STAGES:
            assert run_main(stage, workdir) == 0
        per_class_dir, pie_dir = os.path.join(workdir, "per_class"), os.path.join(workdir, "pie")
        expected_columns = {
            os.path.join(per_class_dir, "per_class_metrics.csv"): [
                "member_id", "method", "sparsity", "seed", "class_id", "class_name", "n",
                "correct", "recall", "precision", "member_top1"],
            os.path.join(per_class_dir, "tstatistic.csv"): [
                "method", "sparsity", "class_id", "class_name", "baseline_mean_recall",
                "variant_mean_recall", "recall_change", "baseline_mean_top1",
                "variant_mean_top1", "normalized_delta", "effect_points",
                "effect_ci_low_points", "effect_ci_high_points", "effect_ci_method",
                "n_errors", "test", "t_statistic", "p_value", "p_value_bh", "significant",
                "significant_uncorrected", "direction"],
            os.path.join(per_class_dir, "tstatistic_summary.csv"): [
                "method", "sparsity", "n_baseline", "n_variant", "n_pairs",
                "baseline_mean_top1", "variant_mean_top1", "test", "correction", "alpha",
                "rule", "n_classes_tested", "n_classes_hurt", "n_classes_helped",
                "recall_change_hurt", "recall_change_helped", "n_helped_lost_recall",
                "min_detectable_delta_points", "n_classes_hurt_uncorrected",
                "n_classes_helped_uncorrected", "min_errors", "n_classes_ceiling",
                "ceiling_classes", "small_population"],
            os.path.join(pie_dir, "pie.csv"): [
                "method", "sparsity", "image_id", "record_key", "filename", "label",
                "baseline_modal_label",
                "variant_modal_label", "baseline_n", "variant_n", "baseline_agreement",
                "variant_agreement", "baseline_mean_prob", "variant_mean_prob",
                "baseline_tied", "variant_tied", "is_pie"],
            os.path.join(pie_dir, "pie_summary.csv"): [
                "method", "sparsity", "n_images", "n_pie", "pie_fraction",
                "baseline_top1_all", "variant_top1_all", "baseline_top1_pie",
                "variant_top1_pie", "baseline_top1_non_pie", "variant_top1_non_pie",
                "ties", "n_baseline_tied", "n_variant_tied", "n_tied", "n_pie_tied",
                "pie_tied_share", "top1_on_pie_heldout_dense", "top1_on_pie_heldout_variant",
                "top1_on_non_pie_heldout_dense", "top1_on_non_pie_heldout_variant",
                "n_heldout_seeds"],
        }
        for path, columns in expected_columns.items():
            assert list(pd.read_csv(path).columns) == columns, path
        assert len(pd.read_csv(os.path.join(per_class_dir, "per_class_metrics.csv"))) == 8 * 4
        assert len(pd.read_csv(os.path.join(pie_dir, "pie.csv"))) == 2 * N_IMAGES
        # In-memory data (digits) has no records to lead back to: the columns are empty.
        names = pd.read_csv(os.path.join(pie_dir, "pie.csv"), dtype=str, keep_default_na=False)
        assert (names[["record_key", "filename"]] == "").all().all()
        for name in ("aggregate_ckpt_metrics", "gen_tstatistic"):
            assert "--workdir=" in open(os.path.join(per_class_dir, f"{name}.flags.txt")).read()
        assert os.path.exists(os.path.join(pie_dir, "aggregate_predictions.flags.txt"))

        before = snapshot(output_files(workdir))
        for stage in STAGES:
            assert run_main(stage, workdir) == 0
            assert stage.run(workdir) is False  # skipped: up to date
        assert snapshot(output_files(workdir)) == before  # bytes and mtimes

    def test_old_csv_gz_workdir_gives_the_same_results(self, tmp_path):
        """A workdir from before Parquet predictions is analysed as it was written."""
        from robustness_tests import analyze
        new, old = str(tmp_path / "new"), str(tmp_path / "old")
        build_workdir(new)
        build_workdir(old)
        manifest = records.read_manifest(old)
        for member_id in manifest["member_id"]:
            path = Workdir(old).predictions_path(member_id)
            records.write_csv(Workdir(old).legacy_predictions_path(member_id),
                              pd.read_parquet(path))
            os.remove(path)
        for stage in STAGES:
            assert run_main(stage, new) == 0
            assert run_main(stage, old) == 0
        names = [os.path.relpath(path, new) for path in output_files(new)
                 if path.endswith(".csv")]
        assert len(names) == 5
        for name in names:
            pd.testing.assert_frame_equal(pd.read_csv(os.path.join(old, name)),
                                          pd.read_csv(os.path.join(new, name)))
        files = analyze.prediction_files(old, manifest)
        assert [os.path.basename(path) for _, path in files] == [
            f"{member_id}.csv.gz" for member_id in manifest["member_id"]]
        pd.testing.assert_frame_equal(
            analyze.read_accuracy(old, files, manifest),
            analyze.read_accuracy(new, analyze.prediction_files(new, manifest), manifest))
        # A rerun with the old files unchanged skips; nothing is rewritten.
        assert aggregate_predictions.run(old) is False

    def test_metrics_match_an_independent_groupby(self, workdir):
        assert run_main(aggregate_ckpt_metrics, workdir) == 0
        metrics = pd.read_csv(os.path.join(workdir, "per_class", "per_class_metrics.csv"))
        raw = raw_predictions(workdir)
        raw["right"] = raw["label"] == raw["predicted"]
        recall = raw.groupby(["member_id", "label"])["right"].mean()
        got = metrics.set_index(["member_id", "class_id"])["recall"]
        np.testing.assert_allclose(got.loc[recall.index].to_numpy(), recall.to_numpy())
        top1 = raw.groupby("member_id")["right"].mean()
        got_top1 = metrics.groupby("member_id")["member_top1"].first()
        np.testing.assert_allclose(got_top1.loc[top1.index], top1)

    def test_tstatistic_matches_scipy_per_class(self, workdir):
        assert run_main(gen_tstatistic, workdir, "--min_errors=0") == 0
        table = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic.csv"))
        raw = raw_predictions(workdir)
        raw["right"] = raw["label"] == raw["predicted"]
        recall = raw.groupby(["method", "sparsity", "member_id", "label"])["right"].mean()
        top1 = raw.groupby(["method", "sparsity", "member_id"])["right"].mean()
        dense_top1 = top1.loc["dense"].mean()
        variant_top1 = top1.loc[("magnitude", 0.5)].mean()
        for class_id in range(N_CLASSES):
            baseline = recall.loc["dense"].xs(class_id, level="label") - dense_top1
            variant = recall.loc[("magnitude", 0.5)].xs(class_id, level="label") - variant_top1
            expected = scipy_stats.ttest_ind(variant, baseline, equal_var=False)
            row = table[(table["sparsity"] == 0.5) & (table["class_id"] == class_id)].iloc[0]
            assert row["t_statistic"] == pytest.approx(expected.statistic, nan_ok=True)
            assert row["p_value"] == pytest.approx(expected.pvalue, nan_ok=True)

    def test_tstatistic_same_from_metrics_file_or_predictions(self, workdir):
        assert run_main(aggregate_ckpt_metrics, workdir) == 0
        assert run_main(gen_tstatistic, workdir) == 0
        path = os.path.join(workdir, "per_class", "tstatistic.csv")
        from_file = open(path, "rb").read()
        os.remove(os.path.join(workdir, "per_class", "per_class_metrics.csv"))
        assert run_main(gen_tstatistic, workdir, "--force") == 0
        assert open(path, "rb").read() == from_file

    def test_pie_modal_labels_match_an_independent_count(self, workdir):
        assert run_main(aggregate_predictions, workdir) == 0
        table = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
        raw = raw_predictions(workdir)
        counts = raw.groupby(["method", "sparsity", "image_id", "predicted"]).size()
        most = counts.groupby(["method", "sparsity", "image_id"]).transform("max")
        # The highest class among the most voted ones (the default rule).
        modal = (counts[counts == most].reset_index()
                 .groupby(["method", "sparsity", "image_id"])["predicted"].max())
        for _, row in table.iterrows():
            assert row["baseline_modal_label"] == modal.loc[("dense", 0.0, row["image_id"])]
            assert row["variant_modal_label"] == modal.loc[
                (row["method"], row["sparsity"], row["image_id"])]
        np.testing.assert_array_equal(
            table["is_pie"], table["baseline_modal_label"] != table["variant_modal_label"])

    def test_changed_option_reruns(self, workdir):
        assert run_main(gen_tstatistic, workdir) == 0
        assert not gen_tstatistic.run(workdir)
        assert gen_tstatistic.run(workdir, correction="none")

    def test_force_rewrites(self, workdir):
        assert run_main(aggregate_predictions, workdir) == 0
        path = os.path.join(workdir, "pie", "pie.csv")
        before = os.stat(path).st_mtime_ns
        os.utime(path, ns=(before - 10**9, before - 10**9))
        assert run_main(aggregate_predictions, workdir, "--force") == 0
        assert os.stat(path).st_mtime_ns > before - 10**9

    def test_changed_predictions_rerun(self, workdir):
        assert run_main(aggregate_ckpt_metrics, workdir) == 0
        build_workdir(workdir, seed=1)
        assert aggregate_ckpt_metrics.run(workdir)

    def test_shifted_distribution_goes_to_its_folder(self, workdir):
        build_workdir(workdir, distribution="gaussian_noise/3")
        for stage in STAGES:
            assert run_main(stage, workdir, "--distribution=gaussian_noise/3") == 0
        assert os.path.exists(os.path.join(
            workdir, "per_class", "gaussian_noise-3", "per_class_metrics.csv"))
        assert os.path.exists(os.path.join(workdir, "per_class", "gaussian_noise-3",
                                           "tstatistic.csv"))
        assert os.path.exists(os.path.join(workdir, "pie", "gaussian_noise-3", "pie.csv"))
        assert not os.path.exists(os.path.join(workdir, "pie", "pie.csv"))


class TestTestsAndCorrections:

    @pytest.fixture
    def workdir(self, tmp_path):
        build_workdir(str(tmp_path))
        return str(tmp_path)

    def read(self, workdir, name="tstatistic.csv", folder=""):
        return pd.read_csv(os.path.join(workdir, "per_class", folder, name))

    def normalised(self, workdir, method, sparsity, class_id, seeds=None):
        """Per seed: class recall minus the mean top-1 of the members of `seeds`."""
        raw = raw_predictions(workdir)
        raw["right"] = raw["label"] == raw["predicted"]
        members = raw[(raw["method"] == method) & (raw["sparsity"] == sparsity)]
        seed = members["member_id"].str.extract(r"seed(\d+)$")[0].astype(int)
        members = members.assign(seed=seed.to_numpy())
        if seeds is not None:
            members = members[members["seed"].isin(seeds)]
        recall = members[members["label"] == class_id].groupby("seed")["right"].mean()
        top1 = members.groupby("seed")["right"].mean()
        return (recall - top1.mean()).sort_index()

    def test_paired_matches_ttest_rel_and_says_so(self, workdir):
        assert run_main(gen_tstatistic, workdir, "--test=paired") == 0
        table, summary = self.read(workdir), self.read(workdir, "tstatistic_summary.csv")
        assert set(table["test"]) == {"paired"}
        assert list(summary["n_pairs"]) == [3, 2]
        for class_id in range(N_CLASSES):
            # magnitude 0.9 has seeds 0 and 1: paired with the dense members of those.
            variant = self.normalised(workdir, "magnitude", 0.9, class_id)
            dense = self.normalised(workdir, "dense", 0.0, class_id, seeds=[0, 1])
            expected = scipy_stats.ttest_rel(variant.to_numpy(), dense.to_numpy())
            row = table[(table["sparsity"] == 0.9) & (table["class_id"] == class_id)].iloc[0]
            if np.ptp(variant.to_numpy() - dense.to_numpy()) < 1e-12:
                assert np.isnan(row["p_value"]) and row["direction"] == "no_variance"
            else:
                assert row["p_value"] == pytest.approx(expected.pvalue)

    def test_permutation_matches_scipy(self, workdir):
        assert run_main(gen_tstatistic, workdir, "--test=permutation", "--min_errors=0") == 0
        table = self.read(workdir)
        for class_id in range(N_CLASSES):
            variant = self.normalised(workdir, "magnitude", 0.5, class_id).to_numpy()
            dense = self.normalised(workdir, "dense", 0.0, class_id).to_numpy()
            row = table[(table["sparsity"] == 0.5) & (table["class_id"] == class_id)].iloc[0]
            if np.ptp(variant) == 0 and np.ptp(dense) == 0:
                assert np.isnan(row["p_value"]) and row["direction"] == "no_variance"
                continue
            expected = scipy_stats.permutation_test(
                (variant, dense), lambda x, y: np.mean(x) - np.mean(y))  # 20 splits: exact
            assert row["p_value"] == pytest.approx(expected.pvalue)

    def test_bh_all_spans_every_distribution_of_the_run(self, workdir):
        build_workdir(workdir, distribution="fog/3", seed=2)
        assert run_main(gen_tstatistic, workdir, "--correction=bh_all",
                        "--also_distributions=fog/3") == 0
        clean, fog = self.read(workdir), self.read(workdir, folder="fog-3")
        both = pd.concat([clean, fog], ignore_index=True)
        defined = both["p_value"].notna().to_numpy()
        np.testing.assert_allclose(
            both["p_value_bh"].to_numpy()[defined],
            scipy_stats.false_discovery_control(both["p_value"].to_numpy()[defined]))
        summary = self.read(workdir, "tstatistic_summary.csv", "fog-3")
        assert summary["rule"].iloc[0] == (
            f"Welch's t-test: p_value_bh <= 0.05, Benjamini-Hochberg over all "
            f"{int(defined.sum())} tests of the study (every variant x class x distribution)")
        assert os.path.exists(os.path.join(workdir, "per_class", "fog-3",
                                           "gen_tstatistic.flags.txt"))
        assert gen_tstatistic.run(workdir, correction="bh_all",
                                  also_distributions=["fog/3"]) is False

    def test_ties_flag_changes_the_pie_flags(self, workdir):
        assert run_main(aggregate_predictions, workdir, "--ties=exclude") == 0
        table = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
        tied = table["baseline_tied"] | table["variant_tied"]
        assert not table.loc[tied, "is_pie"].any()
        summary = pd.read_csv(os.path.join(workdir, "pie", "pie_summary.csv"))
        assert set(summary["ties"]) == {"exclude"}
        assert list(summary["n_tied"]) == list(tied.groupby(table["sparsity"]).sum())


class TestErrors:

    def check_one_line_error(self, capsys, code, message):
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err

    @pytest.mark.parametrize("stage", STAGES)
    def test_missing_manifest(self, tmp_path, capsys, stage):
        self.check_one_line_error(capsys, run_main(stage, str(tmp_path)),
                                  "no population manifest at")

    def test_missing_predictions(self, tmp_path, capsys):
        build_workdir(str(tmp_path))
        os.remove(Workdir(str(tmp_path)).predictions_path("magnitude_0.5_seed1"))
        self.check_one_line_error(capsys, run_main(aggregate_predictions, str(tmp_path)),
                                  "no predictions for member magnitude_0.5_seed1")
        assert not os.path.exists(os.path.join(str(tmp_path), "pie", "pie.csv"))

    def test_different_image_sets(self, tmp_path, capsys):
        workdir = str(tmp_path)
        build_workdir(workdir)
        path = Workdir(workdir).predictions_path("dense_0_seed2")
        records.write_predictions(path, pd.read_parquet(path).iloc[:-1])
        self.check_one_line_error(capsys, run_main(aggregate_ckpt_metrics, workdir),
                                  "have predictions on different image sets")

    def test_label_beyond_classes_json(self, tmp_path, capsys):
        workdir = str(tmp_path)
        build_workdir(workdir)
        records.write_json(os.path.join(workdir, "classes.json"), ["a", "b", "c"])
        self.check_one_line_error(capsys, run_main(gen_tstatistic, workdir),
                                  "is outside the class range 0..2")

    def test_bad_alpha(self, tmp_path, capsys):
        self.check_one_line_error(capsys, run_main(gen_tstatistic, str(tmp_path), "--alpha=2"),
                                  "alpha must lie strictly between 0 and 1, got 2.0")

    def test_unknown_test(self, tmp_path, capsys):
        build_workdir(str(tmp_path))
        self.check_one_line_error(
            capsys, run_main(gen_tstatistic, str(tmp_path), "--test=ttest"),
            "test 'ttest' is not allowed: use one of ['welch', 'paired', 'permutation']")
        assert not os.path.exists(os.path.join(str(tmp_path), "per_class"))

    def test_unknown_ties(self, tmp_path, capsys):
        build_workdir(str(tmp_path))
        self.check_one_line_error(
            capsys, run_main(aggregate_predictions, str(tmp_path), "--ties=random"),
            "ties 'random' is not allowed: use one of ['highest', 'lowest', 'exclude']")
        assert not os.path.exists(os.path.join(str(tmp_path), "pie"))

    def test_paired_without_matching_seeds(self, tmp_path, capsys):
        workdir = str(tmp_path)
        build_workdir(workdir, populations=[("dense", 0.0, 2), ("magnitude", 0.5, 3)])
        self.check_one_line_error(
            capsys, run_main(gen_tstatistic, workdir, "--test=paired"),
            "--test=paired needs a dense member of the same seed for every member of "
            "magnitude_0.5, but seeds [2] have none (dense seeds [0, 1]); use --test=welch")
        assert not os.path.exists(os.path.join(workdir, "per_class", "tstatistic.csv"))

    def test_bad_distribution(self, tmp_path, capsys):
        self.check_one_line_error(
            capsys, run_main(aggregate_predictions, str(tmp_path), "--distribution=fog-3"),
            "--distribution='fog-3' is not allowed")

    def test_one_member_variant_warns_not_fails(self, tmp_path, caplog):
        workdir = str(tmp_path)
        build_workdir(workdir, populations=POPULATIONS + [("quant_int8", 0.0, 1)])
        with caplog.at_level("WARNING"):
            assert run_main(gen_tstatistic, workdir) == 0
        assert "variant quant_int8_0 has 1 member" in caplog.text
        table = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic.csv"))
        quant = table[table["method"] == "quant_int8"]
        assert len(quant) == N_CLASSES and quant["p_value"].isna().all()
        assert not quant["significant"].any()


class TestCommandLine:
    """The real entry points: exit code 2 and one line on stderr."""

    def run_cli(self, module, workdir):
        return subprocess.run(
            [sys.executable, "-m", module, f"--workdir={workdir}"], cwd=ROOT,
            capture_output=True, text=True, timeout=120)

    def test_missing_dense_population(self, tmp_path):
        build_workdir(str(tmp_path), populations=POPULATIONS[1:])
        result = self.run_cli("per_class_accuracy.gen_tstatistic", str(tmp_path))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"error: no dense population in {tmp_path}/population.csv (no member with "
            "method == 'dense'): every variant is compared with it; train dense members "
            "first"]
        assert not os.path.exists(os.path.join(str(tmp_path), "per_class"))

    def test_label_out_of_range(self, tmp_path):
        workdir = str(tmp_path)
        build_workdir(workdir)
        path = Workdir(workdir).predictions_path("dense_0_seed0")
        frame = pd.read_parquet(path)
        frame.loc[3, "label"] = -1
        records.write_predictions(path, frame)
        result = self.run_cli("pie_dataset_gen.aggregate_predictions", workdir)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("error: label -1 of image 103 (member dense_0_seed0) is "
                                   "outside the class range")
        assert not os.path.exists(os.path.join(workdir, "pie", "pie.csv"))



def test_small_populations_and_the_default_correction_are_said(tmp_path, caplog):
    """3 and 2 members a population: the logs say the tests have little power; the
    summary is decided by BH with the uncorrected counts beside it."""
    import logging
    workdir = str(tmp_path / "w")
    build_workdir(workdir)
    with caplog.at_level(logging.INFO):
        assert run_main(gen_tstatistic, workdir) == 0
        assert run_main(aggregate_predictions, workdir) == 0
    assert ("variant magnitude_0.9 has 2 members (< 5): its tests have little power"
            in caplog.text)
    assert "dense_0 has 3 members (< 5): its modal labels are often tied" in caplog.text
    summary = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic_summary.csv"))
    assert set(summary["correction"]) == {"bh"} and summary["small_population"].all()
    table = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic.csv"))
    for row in summary.itertuples():
        rows = table[table["sparsity"] == row.sparsity]
        assert row.n_classes_hurt_uncorrected == (
            rows["significant_uncorrected"] & (rows["direction"] == "hurt")).sum()
        assert row.n_classes_ceiling == (rows["direction"] == "ceiling").sum()
        assert (rows.loc[rows["direction"] == "ceiling", "n_errors"] < row.min_errors).all()
    pies = pd.read_csv(os.path.join(workdir, "pie", "pie_summary.csv"))
    assert (pies["n_pie_tied"] <= pies["n_pie"]).all()
