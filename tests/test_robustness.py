"""Tests of pie.analysis.robustness (hand-made tables) and of the tfds paths of the corruptions stage."""
import math
import os
import statistics

import numpy as np
import pandas as pd
import pytest

from pie.analysis import robustness
from pie.io import records
from pie.io.workdir import Workdir
from robustness_tests import corruptions as corruption_stage


def member_table(rows):
    """Accuracy table from (method, sparsity, seed, distribution, top1) tuples."""
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "seed", "distribution", "top1"])
    frame["member_id"] = (frame["method"] + "_" + frame["sparsity"].map("{:g}".format)
                          + "_seed" + frame["seed"].astype(str))
    frame["n_images"] = 100
    return frame


# Errors (percentage points) in the comments: err = 100 x (1 - top1).
EXCESS_ROWS = [
    ("dense", 0.0, 0, "clean", 0.90), ("dense", 0.0, 0, "fog/3", 0.80),          # 10 -> 20
    ("dense", 0.0, 1, "clean", 0.92), ("dense", 0.0, 1, "fog/3", 0.86),          # 8 -> 14
    ("magnitude", 0.5, 0, "clean", 0.88), ("magnitude", 0.5, 0, "fog/3", 0.70),  # 12 -> 30
    ("magnitude", 0.5, 1, "clean", 0.90), ("magnitude", 0.5, 1, "fog/3", 0.80),  # 10 -> 20
    ("magnitude", 0.5, 2, "clean", 0.85), ("magnitude", 0.5, 2, "fog/3", 0.75),  # 15 -> 25
]


def test_excess_error_pairs_seeds_and_falls_back_to_the_dense_mean():
    per_seed, summary = robustness.excess_error(member_table(EXCESS_ROWS))
    # seed 0: (30-12) - (20-10) = 8; seed 1: (20-10) - (14-8) = 4; seed 2 has no dense
    # member: (25-15) - mean(10, 6) = 2.
    by_seed = per_seed.set_index("seed")
    assert by_seed["excess_error"].to_dict() == pytest.approx({0: 8.0, 1: 4.0, 2: 2.0})
    assert by_seed["dense_reference"].to_dict() == {
        0: "seed", 1: "seed", 2: "population_mean"}
    assert by_seed.loc[2, "dense_error"] == pytest.approx(17.0)
    assert by_seed.loc[2, "dense_error_clean"] == pytest.approx(9.0)
    row = summary.iloc[0]
    assert len(summary) == 1
    assert (row["method"], row["sparsity"], row["distribution"]) == ("magnitude", 0.5, "fog/3")
    assert row["excess_error_mean"] == pytest.approx(14 / 3)
    assert row["excess_error_std"] == pytest.approx(statistics.stdev([8, 4, 2]))
    assert (row["n_seeds"], row["n_paired"]) == (3, 2)
    assert row["error_shift_mean"] == pytest.approx((18 + 10 + 10) / 3)
    assert list(summary.columns) == robustness.EXCESS_ERROR_COLUMNS


def test_excess_error_needs_clean_and_dense():
    no_clean = member_table([row for row in EXCESS_ROWS if row[3] != "clean"])
    with pytest.raises(records.ContractError, match="no clean predictions"):
        robustness.excess_error(no_clean)
    no_dense = member_table([row for row in EXCESS_ROWS if row[0] != "dense"])
    with pytest.raises(records.ContractError, match="no dense population"):
        robustness.excess_error(no_dense)


POTENTIAL_ROWS = [
    ("dense", 0.0, 0, "clean", 0.900), ("dense", 0.0, 1, "clean", 0.920),          # 10, 8
    ("magnitude", 0.5, 0, "clean", 0.906), ("magnitude", 0.5, 1, "clean", 0.914),  # 9.4, 8.6
    ("magnitude", 0.9, 0, "clean", 0.898), ("magnitude", 0.9, 1, "clean", 0.910),  # 10.2, 9.0
    ("dense", 0.0, 0, "fog/3", 0.80), ("dense", 0.0, 1, "fog/3", 0.86),            # 20, 14
    ("magnitude", 0.5, 0, "fog/3", 0.70), ("magnitude", 0.5, 1, "fog/3", 0.80),    # 30, 20
    ("magnitude", 0.9, 0, "fog/3", 0.60), ("magnitude", 0.9, 1, "fog/3", 0.70),    # 40, 30
    # taylor: only seed 0; 0.3 fails (12 > 10.5), the larger 0.6 passes (9.2).
    ("taylor", 0.3, 0, "clean", 0.880), ("taylor", 0.6, 0, "clean", 0.908),
    ("quant_int8", 0.0, 0, "clean", 0.900),  # not pruned: no prune potential
]


def test_prune_potential_population_and_per_seed():
    table = robustness.prune_potential(member_table(POTENTIAL_ROWS), delta=0.5)
    assert list(table.columns) == robustness.PRUNE_POTENTIAL_COLUMNS
    rows = table.set_index(["method", "distribution"])
    assert sorted(rows.index) == [("magnitude", "clean"), ("magnitude", "fog/3"),
                                  ("taylor", "clean")]
    # Population means, clean: dense 9, magnitude 0.5 -> 9.0 <= 9.5, 0.9 -> 9.6 > 9.5.
    clean = rows.loc[("magnitude", "clean")]
    assert clean["prune_potential"] == 0.5
    assert clean["dense_error"] == pytest.approx(9.0)
    # Per seed: seed 0 (dense 10): both pass -> 0.9; seed 1 (dense 8): neither -> 0.
    assert clean["prune_potential_seed_mean"] == pytest.approx(0.45)
    assert clean["prune_potential_seed_std"] == pytest.approx(statistics.stdev([0.9, 0.0]))
    assert (clean["n_seeds"], clean["n_sparsities"], clean["delta"]) == (2, 2, 0.5)
    fog = rows.loc[("magnitude", "fog/3")]
    assert (fog["prune_potential"], fog["prune_potential_seed_mean"]) == (0.0, 0.0)
    taylor = rows.loc[("taylor", "clean")]
    assert taylor["prune_potential"] == 0.6
    assert taylor["prune_potential_seed_mean"] == 0.6
    assert math.isnan(taylor["prune_potential_seed_std"]) and taylor["n_seeds"] == 1


def test_prune_potential_counts_an_error_at_exactly_dense_plus_delta_as_passing():
    # 100 x (1 - 0.956) = 4.4 = 100 x (1 - 0.961) + 0.5, but not in floating point.
    table = member_table([("dense", 0.0, 0, "clean", 0.961),
                          ("magnitude", 0.5, 0, "clean", 0.956)])
    assert robustness.prune_potential(table, 0.5)["prune_potential"].item() == 0.5
    assert robustness.prune_potential(table, 0.4)["prune_potential"].item() == 0.0


@pytest.mark.parametrize("delta", [-0.1, float("nan"), "0.5", True])
def test_prune_potential_rejects_bad_delta(delta):
    with pytest.raises(ValueError, match=r"delta must be a finite number >= 0"):
        robustness.prune_potential(member_table(POTENTIAL_ROWS), delta)


def test_mean_corruption_averages_complete_corruptions_only():
    rows = [(method, sparsity, 0, distribution, top1)
            for method, sparsity, shift in (("dense", 0.0, 0.0), ("magnitude", 0.5, 0.1))
            for distribution, top1 in (("clean", 0.9), ("fog/3", 0.8 - shift),
                                       ("contrast/1", 0.6 - shift), ("imagenet_a", 0.1))]
    rows.append(("dense", 0.0, 0, "snow/2", 0.5))  # only one member: not averaged
    table = robustness.with_mean_corruption(member_table(rows))
    mean = table[table["distribution"] == robustness.MEAN_CORRUPTION].set_index("member_id")
    assert mean.loc["dense_0_seed0", "top1"] == pytest.approx(0.7)
    assert mean.loc["magnitude_0.5_seed0", "top1"] == pytest.approx(0.6)
    assert (mean["n_distributions"] == 2).all() and (mean["n_images"] == 200).all()
    assert list(table.columns) == robustness.ACCURACY_COLUMNS
    # Two severities among the complete corruptions: one mean per severity too.
    by_severity = table[table["distribution"].str.startswith("mean_severity_")]
    assert sorted(set(by_severity["distribution"])) == ["mean_severity_1", "mean_severity_3"]
    severity_1 = by_severity[by_severity["distribution"] == "mean_severity_1"].set_index(
        "member_id")
    assert severity_1.loc["dense_0_seed0", "top1"] == pytest.approx(0.6)  # contrast/1
    assert severity_1.loc["magnitude_0.5_seed0", "top1"] == pytest.approx(0.5)
    assert (by_severity["n_distributions"] == 1).all()
    # clean first, then the sets, the means last (mean_corruption, then by severity)
    dense_rows = table[table["member_id"] == "dense_0_seed0"]["distribution"].tolist()
    assert dense_rows[0] == "clean" and dense_rows[-3:] == [
        robustness.MEAN_CORRUPTION, "mean_severity_1", "mean_severity_3"]
    assert len(table) == len(rows) + 6
    # Rerunning on its own output gives the same table (means are replaced).
    again = robustness.with_mean_corruption(table)
    pd.testing.assert_frame_equal(again, table)


def test_one_severity_adds_no_per_severity_means():
    rows = [(method, 0.0 if method == "dense" else 0.5, 0, distribution, 0.7)
            for method in ("dense", "magnitude") for distribution in ("clean", "fog/3", "snow/3")]
    table = robustness.with_mean_corruption(member_table(rows))
    assert set(table["distribution"]) == {"clean", "fog/3", "snow/3", robustness.MEAN_CORRUPTION}


def test_comparison_pairs_same_seed_and_cyclic_dense_reference():
    manifest = member_table([(method, sparsity, seed, "clean", 0.9)
                             for method, sparsity, seeds in (("dense", 0.0, (0, 1, 2)),
                                                             ("magnitude", 0.5, (0, 3)))
                             for seed in seeds])
    pairs = robustness.comparison_pairs(manifest)
    variant = pairs[pairs["method"] == "magnitude"]
    assert variant[["member_id", "reference_id"]].values.tolist() == [
        ["magnitude_0.5_seed0", "dense_0_seed0"]]  # seed 3 has no dense member
    reference = pairs[pairs["method"] == robustness.DENSE_REFERENCE]
    assert reference[["member_id", "reference_id"]].values.tolist() == [
        ["dense_0_seed0", "dense_0_seed1"], ["dense_0_seed1", "dense_0_seed2"],
        ["dense_0_seed2", "dense_0_seed0"]]
    two = robustness.comparison_pairs(manifest[manifest["seed"] != 2])
    assert two.loc[two["method"] == robustness.DENSE_REFERENCE,
                   ["member_id", "reference_id"]].values.tolist() == [
        ["dense_0_seed0", "dense_0_seed1"]]  # (1, 0) is the same pair


def test_agreement_and_softmax_l2_by_hand():
    labels_a = np.array([[0, 1, 2, 3], [0, 0, 0, 0]])
    labels_b = np.array([[0, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(robustness.agreement(labels_a, labels_b), [0.5, 1.0])
    probs_a = np.array([[1.0, 0.0], [0.5, 0.5]])
    probs_b = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert robustness.softmax_l2(probs_a, probs_b) == pytest.approx(math.sqrt(2) / 2)
    with pytest.raises(ValueError, match="labels must be two non-empty arrays of one shape"):
        robustness.agreement(labels_a, labels_b[:, :3])


def test_uniform_noise_depends_on_seed_and_draw_only():
    first = robustness.uniform_noise((3, 4), seed=1, draw=2)
    assert np.array_equal(first, robustness.uniform_noise((3, 4), seed=1, draw=2))
    assert not np.array_equal(first, robustness.uniform_noise((3, 4), seed=1, draw=3))
    assert first.min() >= -1 and first.max() <= 1 and first.dtype == np.float32


def test_top_feature_masks_and_iou():
    scores = np.array([[3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    masks = robustness.top_feature_masks(scores, 0.5)
    assert masks.tolist() == [[True, False, True, False], [True, True, False, False]]
    np.testing.assert_array_equal(robustness.mask_iou(masks, masks), [1.0, 1.0])
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    np.testing.assert_allclose(robustness.mask_iou(a, b), [1 / 3])
    # 10% of 784 features: ceil(78.4) = 79 per image, images of any shape.
    images = np.random.default_rng(0).random((2, 28, 28, 1))
    assert (robustness.top_feature_masks(images, 0.1).sum(axis=1) == 79).all()
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        robustness.top_feature_masks(scores, 0)


# ------------------------------------------------------------ corruptions stage: tfds


def test_tfds_config_names_exist_in_tfds():
    import tensorflow_datasets as tfds
    from pie.shift import corruptions
    for set_name in ("cifar10_corrupted", "imagenet2012_corrupted"):
        spec = corruption_stage.TFDS_SETS[set_name]
        configs = {f"{set_name}/{name}" for name in tfds.builder_cls(set_name).builder_configs}
        wanted = {spec.config(name, severity) for name in corruptions.ALL_CORRUPTIONS
                  for severity in corruptions.SEVERITIES}
        assert wanted <= configs, sorted(wanted - configs)[:3]
    spec = corruption_stage.TFDS_SETS["cifar10_corrupted"]
    assert spec.config("glass_blur", 2) == "cifar10_corrupted/frosted_glass_blur_2"
    assert spec.config("elastic_transform", 5) == "cifar10_corrupted/elastic_5"


def test_parse_corruptions_and_severities():
    assert corruption_stage.parse_corruptions("noise,fog,gaussian_noise") == [
        "gaussian_noise", "shot_noise", "impulse_noise", "fog"]
    assert len(corruption_stage.parse_corruptions("all")) == 19
    with pytest.raises(ValueError, match=r"^--corruptions: unknown corruption 'blurry'; "
                                         r"allowed: gaussian_noise, .*or all$"):
        corruption_stage.parse_corruptions("fog,blurry")
    assert corruption_stage.parse_severities("3,1,3") == [1, 3]
    for text in ("0", "6"):
        with pytest.raises(ValueError, match=rf"^--severities: severity must be an integer "
                                             rf"in 1..5, got {text}$"):
            corruption_stage.parse_severities(text)


def test_imagenet_a_scores_only_the_classes_the_set_contains(tmp_path):
    import tensorflow_datasets as tfds
    import tf_keras as keras
    workdir, data_dir = str(tmp_path / "w"), str(tmp_path / "tfds")
    num_classes = 1000
    # A model whose logits are a fixed bias: the best class overall is not in the set.
    bias = np.random.default_rng(0).normal(size=num_classes).astype(np.float32)
    inputs = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="classifier")(
        pooled)
    model = keras.Model(inputs, outputs)
    member = "checkpoints/dense/sparsity_0/seed_0"
    with tfds.testing.mock_data(num_examples=5):
        labels = np.array([int(example["label"]) for example in tfds.load(
            "imagenet_a", split="test", data_dir=data_dir,
            decoders={"image": tfds.decode.SkipDecoding()})])
        subset = np.unique(labels)
        outside = np.setdiff1d(np.arange(num_classes), subset)[0]
        bias[outside] = bias.max() + 10
        model.layers[-1].set_weights([np.zeros((3, num_classes), np.float32), bias])
        os.makedirs(os.path.join(workdir, member))
        model.save(os.path.join(workdir, member, "model.keras"))
        records.write_json(os.path.join(workdir, "dataset.json"), {
            "dataset": "imagenet2012", "data_dir": data_dir, "family": "imagenet",
            "num_classes": num_classes})
        records.add_manifest_rows(workdir, [{
            "member_id": "dense_0_seed0", "method": "dense", "sparsity": 0.0,
            "measured_sparsity": 0.0, "seed": 0, "dataset": "imagenet2012", "model": "tiny",
            "top1": 0.0, "path": member, "model_file": f"{member}/model.keras"}])
        assert corruption_stage.run_tfds(workdir, "imagenet_a", [], [], batch_size=2) == 1
    frame = pd.read_parquet(Workdir(workdir).predictions_path("dense_0_seed0", "imagenet_a"))
    probs = np.exp(bias[subset] - bias[subset].max())
    probs /= probs.sum()
    assert frame["distribution"].eq("imagenet_a").all()
    assert frame["label"].tolist() == labels.tolist()
    assert frame["image_id"].tolist() == list(range(len(labels)))
    assert (frame["predicted"] == subset[probs.argmax()]).all()
    np.testing.assert_allclose(frame["prob_predicted"], probs.max(), rtol=1e-5)
    np.testing.assert_allclose(frame["prob_label"], probs[np.searchsorted(subset, labels)],
                               rtol=1e-5)
    # Classes outside the set have probability 0: the top 5 lists the set's first.
    shown = min(5, len(subset))
    top = np.array(frame["top5"].str.split().tolist(), int)[:, :shown]
    assert np.isin(top, subset).all()


def test_prune_potential_has_no_rows_for_quantized_exports_of_pruned_members():
    table = member_table([("dense", 0.0, 0, "clean", 0.961),
                          ("magnitude", 0.5, 0, "clean", 0.956),
                          ("quant_pruned_int8", 0.5, 0, "clean", 0.956),
                          ("quant_sparse", 0.5, 0, "clean", 0.956)])
    assert robustness.prune_potential(table, 0.5)["method"].tolist() == ["magnitude"]
