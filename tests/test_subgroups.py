"""Subgroup metrics: a hand-computed table, the stage on files, celeb_a via tfds mock sources."""
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import pie  # noqa: F401
from pie.analysis import subgroups
from pie.io import records
from pie.io.workdir import Workdir
from tests.conftest import error_lines, run_stage

# Six images, binary labels, attribute g: images 0-2 in group a, 3-5 in group b.
LABELS = np.array([1, 1, 0, 0, 1, 0])
GROUP_G = np.array(["a", "a", "a", "b", "b", "b"])
PREDICTED = {
    "dense_0_seed0": [1, 1, 0, 0, 1, 0],      # no error
    "dense_0_seed1": [1, 0, 0, 0, 1, 0],      # image 1: false negative (a)
    "magnitude_0.5_seed0": [0, 1, 1, 0, 1, 0],  # image 0 FN (a), image 2 FP (a)
    "magnitude_0.5_seed1": [1, 1, 0, 1, 0, 0],  # image 3 FP (b), image 4 FN (b)
}
IS_PIE = [True, False, True, False, False, False]


def _manifest_row(member_id):
    method, sparsity, seed = member_id.rsplit("_", 2)
    return {"member_id": member_id, "method": method, "sparsity": float(sparsity),
            "measured_sparsity": float(sparsity), "seed": int(seed[len("seed"):]),
            "dataset": "handmade", "model": "none", "top1": 0.0, "path": member_id,
            "model_file": f"{member_id}/model.keras"}


def _write_population(workdir, predicted, labels, class_names):
    records.add_manifest_rows(workdir, [_manifest_row(m) for m in predicted])
    records.write_json(os.path.join(workdir, "classes.json"), list(class_names))
    for member_id, values in predicted.items():
        frame = pd.DataFrame({
            "member_id": member_id, "image_id": np.arange(len(labels)), "label": labels,
            "predicted": values, "prob_predicted": 0.9, "prob_label": 0.5})
        records.write_predictions(Workdir(workdir).predictions_path(member_id), frame)


@pytest.fixture()
def handmade(tmp_path):
    workdir = str(tmp_path / "w")
    _write_population(workdir, PREDICTED, LABELS, ["negative", "positive"])
    groups_csv = str(tmp_path / "groups.csv")
    # Listed out of order: the join is by image_id, not by position.
    pd.DataFrame({"image_id": np.arange(6)[::-1], "g": GROUP_G[::-1]}).to_csv(
        groups_csv, index=False)
    return workdir, groups_csv


def _write_pie(workdir):
    pie_frame = pd.DataFrame({"method": "magnitude", "sparsity": 0.5,
                              "image_id": np.arange(6), "is_pie": IS_PIE})
    records.write_csv(subgroups.pie_path(workdir), pie_frame)


def _stage():
    from per_class_accuracy import subgroups as stage
    return stage


def test_hand_computed_table(handmade, capsys):
    workdir, groups_csv = handmade
    _write_pie(workdir)
    assert _stage().run(workdir, groups_csv=groups_csv)
    table = pd.read_csv(subgroups.subgroups_path(workdir))
    assert list(table.columns) == subgroups.SUBGROUP_COLUMNS
    assert table[["method", "attribute", "group"]].values.tolist() == [
        ["magnitude", "g", "a"], ["magnitude", "g", "b"]]
    a, b = table.iloc[0], table.iloc[1]
    # Member errors: dense 0/3, 1/3 (a), 0, 0 (b); variant 2/3, 0 (a), 0, 2/3 (b).
    expected = {
        "n_images": (3, 3), "share": (0.5, 0.5), "n_dense": (2, 2), "n_variant": (2, 2),
        "dense_error": (1 / 6, 0), "variant_error": (1 / 3, 1 / 3),
        "dense_error_all": (1 / 12, 1 / 12), "variant_error_all": (1 / 3, 1 / 3),
        # (1/3 - 1/6) - (1/3 - 1/12) and (1/3 - 0) - 1/4
        "error_change_vs_overall": (-1 / 12, 1 / 12),
        # Negatives: one in a (image 2), two in b; the variant's FPs: image 2, image 3.
        "dense_fpr": (0, 0), "variant_fpr": (0.5, 0.25),
        "dense_fpr_all": (0, 0), "variant_fpr_all": (1 / 3, 1 / 3),
        "fpr_change_vs_overall": (1 / 6, -1 / 12),
        # Positives: two in a, one in b.
        "dense_fnr": (0.25, 0), "variant_fnr": (0.25, 0.5),
        "dense_fnr_all": (1 / 6, 1 / 6), "variant_fnr_all": (1 / 3, 1 / 3),
        "fnr_change_vs_overall": (-1 / 6, 1 / 3),
        "pie_rate": (2 / 3, 0), "pie_rate_all": (1 / 3, 1 / 3), "pie_share": (1, 0),
    }
    for column, (value_a, value_b) in expected.items():
        assert a[column] == pytest.approx(value_a), column
        assert b[column] == pytest.approx(value_b), column
    # Welch: member group error minus member overall error.
    t_a, p_a = scipy_stats.ttest_ind([2 / 3 - 1 / 3, 0 - 1 / 3], [0 - 0, 1 / 3 - 1 / 6],
                                     equal_var=False)
    t_b, p_b = scipy_stats.ttest_ind([0 - 1 / 3, 2 / 3 - 1 / 3], [0 - 0, 0 - 1 / 6],
                                     equal_var=False)
    assert a["t_statistic"] == pytest.approx(t_a) and a["p_value"] == pytest.approx(p_a)
    assert b["t_statistic"] == pytest.approx(t_b) and b["p_value"] == pytest.approx(p_b)
    # A rerun with the same inputs skips; --force recomputes.
    assert not _stage().run(workdir, groups_csv=groups_csv)
    assert _stage().run(workdir, groups_csv=groups_csv, force=True)


# Member values err_group - err_all of the hand example (seeds 0, 1), group a and b.
VARIANT_A, DENSE_A = [2 / 3 - 1 / 3, 0 - 1 / 3], [0 - 0, 1 / 3 - 1 / 6]
VARIANT_B, DENSE_B = [0 - 1 / 3, 2 / 3 - 1 / 3], [0 - 0, 0 - 1 / 6]


def test_paired_test_pairs_by_seed_and_matches_scipy(handmade):
    workdir, groups_csv = handmade
    assert _stage().run(workdir, groups_csv=groups_csv, test="paired")
    table = pd.read_csv(subgroups.subgroups_path(workdir))
    assert set(table["test"]) == {"paired"}
    for row, variant, dense in ((table.iloc[0], VARIANT_A, DENSE_A),
                                (table.iloc[1], VARIANT_B, DENSE_B)):
        expected = scipy_stats.ttest_rel(variant, dense)
        assert row["t_statistic"] == pytest.approx(expected.statistic)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        # The effect is the change beyond the overall change, in points.
        assert row["effect_points"] == pytest.approx(100 * row["error_change_vs_overall"])
        assert row["effect_ci_low_points"] <= row["effect_points"] <= row[
            "effect_ci_high_points"]


def test_permutation_test_matches_scipy(handmade):
    workdir, groups_csv = handmade
    assert _stage().run(workdir, groups_csv=groups_csv, test="permutation")
    table = pd.read_csv(subgroups.subgroups_path(workdir))
    for row, variant, dense in ((table.iloc[0], VARIANT_A, DENSE_A),
                                (table.iloc[1], VARIANT_B, DENSE_B)):
        expected = scipy_stats.permutation_test(
            (variant, dense), lambda x, y: np.mean(x) - np.mean(y))  # 6 splits: exact
        assert row["p_value"] == pytest.approx(expected.pvalue)


def test_paired_without_a_dense_member_of_the_seed_is_one_line(handmade, capsys):
    workdir, groups_csv = handmade
    records.add_manifest_rows(workdir, [_manifest_row("magnitude_0.5_seed7")])
    frame = pd.DataFrame({"member_id": "magnitude_0.5_seed7", "image_id": np.arange(6),
                          "label": LABELS, "predicted": LABELS, "prob_predicted": 0.9,
                          "prob_label": 0.5})
    records.write_predictions(Workdir(workdir).predictions_path("magnitude_0.5_seed7"), frame)
    result = run_stage("per_class_accuracy.subgroups", f"--workdir={workdir}",
                       f"--groups_csv={groups_csv}", "--test=paired", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: --test=paired needs a dense member of the same seed for every member of "
        "magnitude_0.5, but seeds [7] have none (dense seeds [0, 1]); use --test=welch"]
    assert not os.path.exists(subgroups.subgroups_path(workdir))


def test_zero_variance_group_has_no_p_value(tmp_path):
    # Every member gets group a right and errs on the same share of group b.
    workdir = str(tmp_path / "w")
    same = {"dense_0_seed0": [1, 1, 0, 1, 1, 0], "dense_0_seed1": [1, 1, 0, 1, 1, 0],
            "magnitude_0.5_seed0": [1, 1, 0, 1, 0, 1], "magnitude_0.5_seed1": [1, 1, 0, 1, 0, 1]}
    _write_population(workdir, same, LABELS, ["negative", "positive"])
    groups = pd.DataFrame({"image_id": np.arange(6), "g": GROUP_G})
    for test in ("welch", "paired", "permutation"):
        table = subgroups.subgroup_table(
            pd.concat([pd.DataFrame({"member": m, "image_id": np.arange(6), "label": LABELS,
                                     "predicted": p}) for m, p in enumerate(same.values())]),
            records.read_manifest(workdir), groups, binary=True, test=test, resamples=99)
        assert table["p_value"].isna().all(), test
        assert (table["error_change_vs_overall"].abs() > 0).all()


def test_unknown_test_is_one_line(handmade):
    workdir, groups_csv = handmade
    result = run_stage("per_class_accuracy.subgroups", f"--workdir={workdir}",
                       f"--groups_csv={groups_csv}", "--test=ttest", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: test 'ttest' is not allowed: use one of ['welch', 'paired', 'permutation']"]


def test_without_pie_file_pie_columns_are_nan_with_a_warning(handmade, capsys):
    workdir, groups_csv = handmade
    _stage().run(workdir, groups_csv=groups_csv)
    assert f"warning: no {subgroups.pie_path(workdir)}" in capsys.readouterr().out
    table = pd.read_csv(subgroups.subgroups_path(workdir))
    assert table[["pie_rate", "pie_rate_all", "pie_share"]].isna().all().all()
    assert table["dense_error"].notna().all()


def test_multiclass_has_no_fpr_fnr_and_empty_cells_join_no_group(tmp_path):
    workdir = str(tmp_path / "w")
    labels = np.array([0, 1, 2, 2])
    predicted = {"dense_0_seed0": [0, 1, 2, 0], "magnitude_0.5_seed0": [1, 1, 2, 2]}
    _write_population(workdir, predicted, labels, ["x", "y", "z"])
    groups_csv = str(tmp_path / "groups.csv")
    pd.DataFrame({"image_id": [0, 1, 2, 3], "h": [1, 1, np.nan, 2]}).to_csv(
        groups_csv, index=False)
    _stage().run(workdir, groups_csv=groups_csv)
    table = pd.read_csv(subgroups.subgroups_path(workdir), dtype={"group": str})
    # Image 2's empty cell puts it in no group; whole-number floats print as integers.
    assert table["group"].tolist() == ["1", "2"]
    assert table["n_images"].tolist() == [2, 1]
    assert table["share"].tolist() == [0.5, 0.25]
    assert table["dense_error"].tolist() == [0.0, 1.0]
    assert table["variant_error"].tolist() == [0.5, 0.0]
    for rate in ("fpr", "fnr"):
        assert table[[f"dense_{rate}", f"variant_{rate}"]].isna().all().all()
    # One member per population: the t-test is undefined.
    assert table[["t_statistic", "p_value"]].isna().all().all()


@pytest.mark.parametrize("content,message", [
    ("g\na\n", "groups file {path} has no 'image_id' column; it needs 'image_id' and one "
                "column per attribute"),
    ("image_id\n0\n", "groups file {path} has no attribute columns besides 'image_id'"),
    ("image_id,g\n0,a\n0,b\n", "groups file {path}: image_id 0 appears twice"),
    ("image_id,g\nx,a\n", "groups file {path}: 'image_id' must hold integers"),
])
def test_bad_groups_files(tmp_path, content, message):
    path = tmp_path / "groups.csv"
    path.write_text(content)
    with pytest.raises(subgroups.SubgroupError) as error:
        subgroups.read_groups_csv(str(path))
    assert str(error.value) == message.format(path=path)


def test_unknown_attribute_and_coverage(handmade):
    workdir, groups_csv = handmade
    with pytest.raises(subgroups.SubgroupError) as error:
        _stage().run(workdir, groups_csv=groups_csv, attributes=["g", "age"])
    assert str(error.value) == (f"unknown group attribute age; groups file {groups_csv} "
                                "has: g")
    partial = pd.DataFrame({"image_id": [0, 1, 2], "g": ["a", "a", "b"]})
    with pytest.raises(subgroups.SubgroupError, match=r"has no row for 3 of the 6 eval "
                                                       r"images \(e\.g\. image_id 3\)"):
        subgroups.check_coverage(partial, np.arange(6), "groups file x")
    assert not os.path.exists(subgroups.subgroups_path(workdir))


def test_cli_errors_are_one_line_exit_2(handmade, tmp_path):
    workdir, _ = handmade
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text("g\na\n")
    result = run_stage("per_class_accuracy.subgroups", f"--workdir={workdir}",
                       f"--groups_csv={no_ids}", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: groups file {no_ids} has no 'image_id' column; it needs 'image_id' and "
        "one column per attribute"]
    assert not os.path.exists(subgroups.subgroups_path(workdir))


# ------------------------------------------------------------------ celeb_a (mocked)


def _magnitude_prune(model, fraction):
    """One-shot magnitude pruning: the smallest |w| of each kernel set to zero."""
    import tf_keras as keras
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in pruned.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            threshold = np.quantile(np.abs(kernel), fraction)
            layer.kernel.assign(np.where(np.abs(kernel) <= threshold, 0.0, kernel))
    return pruned


def _independent_rates(frame, groups, attribute):
    """Per member and group value: error, fpr, fnr by plain boolean masks."""
    rates = {}
    joined = frame.merge(groups, on="image_id")
    for (member_id, value), part in joined.groupby(["member_id", attribute]):
        label, predicted = part["label"].to_numpy(), part["predicted"].to_numpy()
        negatives, positives = label == 0, label == 1
        rates[(member_id, str(value))] = (
            np.mean(label != predicted),
            np.mean(predicted[negatives] == 1) if negatives.any() else np.nan,
            np.mean(predicted[positives] == 0) if positives.any() else np.nan)
    return rates


def _nanmean(values):
    """Mean over the defined values; NaN when none is (a group without positives)."""
    values = np.asarray(values, np.float64)
    return values[~np.isnan(values)].mean() if (~np.isnan(values)).any() else np.nan


def test_celeb_a_attributes_through_tfds_mock(tmp_path):
    import tensorflow_datasets as tfds
    import tf_keras as keras
    from pie.data import sources
    from pie.models import builders, predict
    workdir = str(tmp_path / "celeb")
    frames = []
    with tfds.testing.mock_data(num_examples=12):
        source = sources.load("celeb_a", label_attribute="Blond_Hair")
        sources.save_config(workdir, source, dataset="celeb_a", label_attribute="Blond_Hair")
        images, labels, image_ids = source.eval_arrays()
        inputs = np.asarray(source.normalize(images))
        train_inputs, train_labels = next(iter(source.train_batches(6, seed=0, epoch=0)))
        rows = []
        for seed in (0, 1):
            keras.utils.set_random_seed(seed)
            model = builders.build("small_cnn", source.input_shape, 2, width=2)
            model.compile(keras.optimizers.Adam(1e-2),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.train_on_batch(train_inputs, train_labels)
            for method, sparsity, member in (("dense", 0.0, model),
                                             ("magnitude", 0.5, _magnitude_prune(model, 0.5))):
                member_id = f"{records.variant_key(method, sparsity)}_seed{seed}"
                frame = predict.predictions_frame(member_id, member(inputs).numpy(),
                                                  labels, image_ids)
                records.write_predictions(Workdir(workdir).predictions_path(member_id), frame)
                frames.append(frame)
                rows.append(dict(_manifest_row(member_id), dataset="celeb_a",
                                 model="small_cnn"))
        records.add_manifest_rows(workdir, rows)
        groups = sources.load_for_workdir(workdir, group_attributes=["Male", "Young"]).attributes()
        _stage().run(workdir, attributes=["Male", "Young"])
        with pytest.raises(sources.DataError, match=r"unknown group attributes \['Bald_'\]"):
            _stage().run(workdir, attributes=["Bald_"], force=True)
    table = pd.read_csv(subgroups.subgroups_path(workdir), dtype={"group": str})
    groups = pd.DataFrame(groups)
    predictions = pd.concat(frames)
    assert sorted(table["attribute"].unique()) == ["Male", "Young"]
    for attribute in ("Male", "Young"):
        rates = _independent_rates(predictions, groups[["image_id", attribute]], attribute)
        for row in table[table["attribute"] == attribute].itertuples():
            assert row.n_images == int((groups[attribute].astype(str) == row.group).sum())
            for position, rate in enumerate(("error", "fpr", "fnr")):
                dense = _nanmean([rates[(f"dense_0_seed{s}", row.group)][position]
                                    for s in (0, 1)])
                variant = _nanmean([rates[(f"magnitude_0.5_seed{s}", row.group)][position]
                                      for s in (0, 1)])
                np.testing.assert_allclose(getattr(row, f"dense_{rate}"), dense)
                np.testing.assert_allclose(getattr(row, f"variant_{rate}"), variant)


def test_group_with_one_error_is_ceiling_and_intervals_invert_the_test(tmp_path):
    # Group a: one error among all members (dense seed 1, image 1); group b varies.
    predicted = {"dense_0_seed0": [1, 1, 0, 0, 1, 1], "dense_0_seed1": [1, 0, 0, 1, 1, 0],
                 "magnitude_0.5_seed0": [1, 1, 0, 1, 0, 0],
                 "magnitude_0.5_seed1": [1, 1, 0, 0, 0, 1]}
    workdir = str(tmp_path / "w")
    _write_population(workdir, predicted, LABELS, ["negative", "positive"])
    groups = pd.DataFrame({"image_id": np.arange(6), "g": GROUP_G})
    frame = pd.concat([pd.DataFrame({"member": m, "image_id": np.arange(6), "label": LABELS,
                                     "predicted": p})
                       for m, p in enumerate(predicted.values())])
    for test in ("welch", "paired", "permutation"):
        for correction in ("none", "bh"):
            table = subgroups.subgroup_table(frame, records.read_manifest(workdir), groups,
                                             binary=True, test=test, resamples=99,
                                             correction=correction)
            a, b = table.iloc[0], table.iloc[1]
            assert a["direction"] == "ceiling" and a["n_errors"] == 1, test
            assert np.isnan(a["p_value"]) and not a["significant"]
            assert not a["significant_uncorrected"]
            assert b["direction"] != "ceiling" and b["n_errors"] == 6
    # Group b's interval is Welch's (scipy), in points, and agrees with its p-value.
    table = subgroups.subgroup_table(frame, records.read_manifest(workdir), groups,
                                     binary=True, correction="none")
    # Member error on b minus overall error: dense 1/3 - 1/6, 1/3 - 1/3; variant
    # 2/3 - 1/3 twice: the variant values are equal, the dense ones are not.
    expected = scipy_stats.ttest_ind([2 / 3 - 1 / 3, 2 / 3 - 1 / 3], [1 / 3 - 1 / 6, 0.0],
                                     equal_var=False)
    interval = expected.confidence_interval()
    b = table.iloc[1]
    assert b["p_value"] == pytest.approx(expected.pvalue)
    assert b["effect_ci_low_points"] == pytest.approx(100 * interval.low)
    assert b["effect_ci_high_points"] == pytest.approx(100 * interval.high)
    assert b["effect_ci_method"] == "welch_t" and b["correction"] == "none"


def test_bad_correction_and_min_errors_are_one_line(handmade):
    workdir, groups_csv = handmade
    for flag, message in (
            ("--correction=holm", "error: correction 'holm' is not allowed: use one of "
                                  "['none', 'bh', 'bh_all']"),
            ("--min_errors=-2", "error: min_errors must be an integer >= 0 (default: the "
                                "members of the smaller population), got -2")):
        result = run_stage("per_class_accuracy.subgroups", f"--workdir={workdir}",
                           f"--groups_csv={groups_csv}", flag, check=False)
        assert result.returncode == 2 and error_lines(result) == [message]
        assert not os.path.exists(subgroups.subgroups_path(workdir))
