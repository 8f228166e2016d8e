"""Lost in Pruning's protocol: noise prune potential, the excess-error fit, SIS.

Metrics on hand-made tables, checked against direct computations; the stages on
the tiny digits population (in-process, plus one process per bad-input line).
"""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import error_lines, run_stage
from pie.analysis import robustness
from pie.io import records
from pie.io.workdir import Workdir
from robustness_tests import analyze, noise_similarity


# ------------------------------------------------------------ noise prune potential


def _noisy_accuracy():
    """Two dense seeds and a method at 0.5 / 0.9, two seeds, 3 draws at eps 0.2."""
    rng = np.random.default_rng(5)
    rows = []
    for method, sparsity in (("dense", 0.0), ("wt", 0.5), ("wt", 0.9), ("quant_int8", 0.0)):
        for seed in (0, 1):
            for draw in range(3):
                # multiples of 1/200 images, like real accuracies
                top1 = rng.integers(150, 200) / 200
                rows.append((method, sparsity, seed, 0.2, draw, top1, 200))
    return pd.DataFrame(rows, columns=["method", "sparsity", "seed", "eps", "draw", "top1",
                                       "images"])


@pytest.mark.parametrize("delta", [0.0, 0.5, 3.0, 100.0])
def test_noise_prune_potential_by_hand(delta):
    accuracy = _noisy_accuracy()
    table = robustness.noise_prune_potential(accuracy, delta)
    assert list(table.columns) == robustness.NOISE_PRUNE_POTENTIAL_COLUMNS
    assert table["method"].tolist() == ["wt"]  # dense and quantized have no potential
    potentials = []
    for draw in range(3):
        at = accuracy[accuracy["draw"] == draw]
        dense_error = 100 * (1 - at.loc[at["method"] == "dense", "top1"].mean())
        best = 0.0
        for sparsity in (0.5, 0.9):
            error = 100 * (1 - at.loc[(at["method"] == "wt") & (at["sparsity"] == sparsity),
                                      "top1"].mean())
            if error <= dense_error + delta + 1e-9:
                best = max(best, sparsity)
        potentials.append(best)
    potentials = np.array(potentials)
    row = table.iloc[0]
    assert row["noise_prune_potential_mean"] == pytest.approx(potentials.mean())
    assert row["noise_prune_potential_mad"] == pytest.approx(
        np.median(np.abs(potentials - np.median(potentials))))
    assert row["noise_prune_potential_std"] == pytest.approx(potentials.std(ddof=1))
    assert (row["draws"], row["n_sparsities"], row["n_seeds"], row["images"]) == (3, 2, 2, 200)
    assert row["delta"] == delta
    if delta == 100.0:
        assert row["noise_prune_potential_mean"] == 0.9


def test_noise_prune_potential_needs_dense_and_a_valid_delta():
    accuracy = _noisy_accuracy()
    with pytest.raises(records.ContractError, match="no dense population"):
        robustness.noise_prune_potential(accuracy[accuracy["method"] != "dense"])
    with pytest.raises(ValueError, match="delta must be a finite number >= 0"):
        robustness.noise_prune_potential(accuracy, -1.0)


def _lineage_accuracy():
    """Hand-made noisy accuracies of a lineage population: dense seeds 0 and 1, wt at
    0.5 and 0.9 for both seeds, a quantized export; 2 eps x 3 draws; multiples of 1/200
    with a small spread, so excesses of exactly delta = 0.5 points (one image) occur."""
    rng = np.random.default_rng(11)
    rows = []
    members = [("dense", 0.0), ("wt", 0.5), ("wt", 0.9), ("quant_int8", 0.0)]
    for method, sparsity in members:
        for seed in (0, 1):
            member_id = f"{method}_{sparsity:g}_seed{seed}"
            for eps in (0.1, 0.3):
                for draw in range(3):
                    top1 = (180 - int(20 * sparsity * eps) - rng.integers(0, 3)) / 200
                    rows.append((member_id, method, sparsity, seed, eps, draw, top1, 200))
    return pd.DataFrame(rows, columns=["member_id", "method", "sparsity", "seed", "eps",
                                       "draw", "top1", "images"])


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
def test_noise_prune_potential_each_member_against_its_own_parent(delta):
    from pie.analysis import noise_potential
    accuracy = _lineage_accuracy()
    parents = {f"{m}_{s:g}_seed{seed}": f"dense_0_seed{seed}"
               for m, s in (("wt", 0.5), ("wt", 0.9), ("quant_int8", 0.0)) for seed in (0, 1)}
    per_draw = noise_potential.per_parent(accuracy, parents, delta)
    per_seed, table = noise_potential.summary(per_draw, delta)
    assert list(per_seed.columns) == noise_potential.PER_SEED_COLUMNS
    assert list(table.columns) == noise_potential.COLUMNS
    assert table["method"].unique().tolist() == ["wt"]  # dense, quantized: no potential
    error = {(r.member_id, r.eps, r.draw): 100 * (1 - r.top1) for r in accuracy.itertuples()}
    direct = {}  # (eps, seed) -> potentials over draws
    ties = 0
    for eps in (0.1, 0.3):
        for seed in (0, 1):
            for draw in range(3):
                parent = error[(f"dense_0_seed{seed}", eps, draw)]
                best = 0.0
                for sparsity in (0.5, 0.9):
                    excess = error[(f"wt_{sparsity:g}_seed{seed}", eps, draw)] - parent
                    ties += abs(excess - delta) < 1e-9
                    if not excess > delta + 1e-9:  # fails only when the excess is > delta
                        best = max(best, sparsity)
                direct.setdefault((eps, seed), []).append(best)
    assert delta != 0.5 or ties > 0  # the hand-made data reaches the boundary
    for row in per_seed.itertuples():
        values = np.array(direct[(row.eps, row.seed)])
        assert row.noise_prune_potential_mean == pytest.approx(values.mean())
        assert row.noise_prune_potential_mad == pytest.approx(
            np.median(np.abs(values - np.median(values))))
        assert row.parent_id == f"dense_0_seed{row.seed}" and row.draws == 3
    for row in table.itertuples():
        values = np.array(direct[(row.eps, 0)] + direct[(row.eps, 1)])
        assert row.noise_prune_potential_mean == pytest.approx(values.mean())
        assert row.noise_prune_potential_std == pytest.approx(values.std(ddof=1))
        seed_means = [np.mean(direct[(row.eps, seed)]) for seed in (0, 1)]
        assert row.noise_prune_potential_seed_std == pytest.approx(np.std(seed_means, ddof=1))
        assert (row.n_seeds, row.draws, row.rule, row.delta) == (2, 3, "per_parent", delta)
    # The earlier rule stays one option away: population means, as before.
    _, population = noise_potential.tables(accuracy, parents, delta, "population_mean")
    expected = robustness.noise_prune_potential(accuracy, delta)
    np.testing.assert_allclose(population["noise_prune_potential_mean"],
                               expected["noise_prune_potential_mean"])
    assert (population["rule"] == "population_mean").all()
    with pytest.raises(ValueError, match="unknown noise prune potential rule 'median'; "
                                         "allowed: per_parent, population_mean"):
        noise_potential.tables(accuracy, parents, delta, "median")


def test_dense_parents_follow_the_lineage_to_the_dense_member():
    from pie.analysis import noise_potential
    manifest = pd.DataFrame([
        ("dense_0_seed0", "dense", 0, ""), ("dense_0_seed1", "dense", 1, ""),
        ("wt_0.5_seed0", "wt", 0, "dense_0_seed0"),
        ("wt_0.9_seed0", "wt", 0, "wt_0.5_seed0"),  # iterative: via the 0.5 member
        ("magnitude_0.5_seed1", "magnitude", 1, ""),  # scratch: its seed's dense member
        ("wt_0.5_seed2", "wt", 2, ""),  # no dense member of seed 2: left out
    ], columns=["member_id", "method", "seed", "parent_id"])
    assert noise_potential.dense_parents(manifest) == {
        "wt_0.5_seed0": "dense_0_seed0", "wt_0.9_seed0": "dense_0_seed0",
        "magnitude_0.5_seed1": "dense_0_seed1"}


# ------------------------------------------------------------------ excess error fit


def _per_seed(points):
    return pd.DataFrame([(m, s, d, e) for m, s, d, e in points],
                        columns=["method", "sparsity", "distribution", "excess_error"])


def test_excess_error_fit_is_least_squares_through_the_origin():
    rng = np.random.default_rng(0)
    x = np.repeat([0.3, 0.6, 0.9], 4)
    y = 4.0 * x + rng.normal(0, 0.5, len(x))
    points = [("wt", a, "fog/3", b) for a, b in zip(x, y)]
    points += [("sipp", a, "fog/3", 2.5 * a) for a in (0.5, 0.9, 0.9)]  # exactly a line
    points += [("sipp", 0.5, "contrast/3", 1.0)]  # one point: no interval
    points += [("dense", 0.0, "fog/3", 0.0), ("quant_int8", 0.5, "fog/3", 9.0)]
    fit = robustness.excess_error_fit(_per_seed(points))
    assert list(fit.columns) == robustness.EXCESS_ERROR_FIT_COLUMNS
    assert fit[["method", "distribution"]].values.tolist() == [
        ["sipp", "contrast/3"], ["sipp", "fog/3"], ["wt", "fog/3"]]
    wt = fit[fit["method"] == "wt"].iloc[0]
    direct, *_ = np.linalg.lstsq(x[:, None], y, rcond=None)  # no intercept column
    assert wt["slope"] == pytest.approx(direct[0])
    assert wt["slope_ci_low"] < wt["slope"] < wt["slope_ci_high"]
    assert wt["slope_ci_high"] - wt["slope_ci_low"] < 2.0
    assert (wt["n_points"], wt["n_sparsities"], wt["confidence"]) == (12, 3, 0.95)
    line = fit[(fit["method"] == "sipp") & (fit["distribution"] == "fog/3")].iloc[0]
    # every resample of points on one line through 0 has the same slope
    for column in ("slope", "slope_ci_low", "slope_ci_high"):
        assert line[column] == pytest.approx(2.5)
    single = fit[fit["distribution"] == "contrast/3"].iloc[0]
    assert single["slope"] == 2.0 and np.isnan(single["slope_ci_low"])
    again = robustness.excess_error_fit(_per_seed(points))
    pd.testing.assert_frame_equal(fit, again)  # seeded


@pytest.fixture(scope="module")
def shifted(tiny_predictions, tmp_path_factory):
    """The tiny population's clean predictions and a hand-made shifted copy of them."""
    workdir = str(tmp_path_factory.mktemp("lost") / "w")
    shutil.copytree(tiny_predictions, workdir)
    manifest = records.read_manifest(workdir)
    for member_id in manifest["member_id"]:
        frame = pd.read_parquet(Workdir(workdir).predictions_path(member_id))
        # pruned members lose 2x as many images as dense ones (every 10th / 20th)
        step = 10 if member_id.startswith("magnitude") else 20
        frame.loc[::step, "predicted"] = (frame.loc[::step, "label"] + 1) % 10
        frame["distribution"] = "contrast/3"
        records.write_predictions(Workdir(workdir).predictions_path(member_id, "contrast/3"), frame)
    return workdir


def test_analyze_writes_the_excess_error_fit(shifted):
    assert analyze.run(shifted, force=True)
    fit = pd.read_csv(Workdir(shifted).file("excess_error_fit"))
    per_seed = pd.read_csv(Workdir(shifted).file("excess_error_per_seed"))
    assert list(fit.columns) == robustness.EXCESS_ERROR_FIT_COLUMNS
    row = fit[fit["distribution"] == "contrast/3"].iloc[0]
    points = per_seed[per_seed["distribution"] == "contrast/3"]
    expected = (points["sparsity"] * points["excess_error"]).sum() / (
        points["sparsity"] ** 2).sum()
    assert row["slope"] == pytest.approx(expected, abs=1e-9) and row["slope"] > 0
    assert row["n_points"] == 2


# ------------------------------------------------------------------ noise stage


def test_noise_stage_writes_the_noise_prune_potential(shifted):
    from pie.analysis import noise_potential
    from pie.models import predict
    assert noise_similarity.run(shifted, [0.0, 0.3], draws=3, images=10000, seed=0,
                                batch_size=128, force=True, delta=0.5)
    table = pd.read_csv(Workdir(shifted).file("noise_prune_potential"))
    per_seed = pd.read_csv(Workdir(shifted).file("noise_prune_potential_per_seed"))
    assert list(table.columns) == noise_potential.COLUMNS
    assert list(per_seed.columns) == noise_potential.PER_SEED_COLUMNS
    assert table["eps"].tolist() == [0.0, 0.3] and table["draws"].tolist() == [1, 3]
    assert (table["rule"] == "per_parent").all()
    # eps 0 is the clean prune potential of the same images, each pruned member against
    # the dense member of its seed, computed directly.
    x, labels, _ = noise_similarity.eval_subset(shifted, 10000, 0)
    manifest = records.read_manifest(shifted)
    errors = {}
    for row in manifest.to_dict("records"):
        logits = predict.load_member(shifted, row).logits(x, 128)
        errors[(row["method"], row["seed"])] = 100 * (1 - (logits.argmax(1) == labels).mean())
    seeds = sorted(manifest["seed"].unique())
    direct = [0.5 if errors[("magnitude", s)] - errors[("dense", s)] <= 0.5 + 1e-9 else 0.0
              for s in seeds]
    at_zero = per_seed[per_seed["eps"] == 0.0].sort_values("seed")
    assert at_zero["noise_prune_potential_mean"].tolist() == direct
    assert table.loc[0, "noise_prune_potential_mean"] == pytest.approx(np.mean(direct))
    assert table.loc[0, "dense_error_mean"] == pytest.approx(
        np.mean([errors[("dense", s)] for s in seeds]))
    assert 0 <= table.loc[1, "noise_prune_potential_mean"] <= 0.5


def test_default_eps_grid_is_the_papers():
    assert noise_similarity.DEFAULT_EPS.split(",") == [
        f"{v:g}" for v in np.round(np.linspace(0, 0.7, 15), 10)]
    assert len(noise_similarity.DEFAULT_EPS.split(",")) == 15


@pytest.mark.parametrize("flags, message", [
    (["--eps=0,1.5"], "error: --eps values must be in [0, 1], got [1.5]"),
    (["--eps=-0.1"], "error: --eps values must be in [0, 1], got [-0.1]"),
    (["--delta=-1"], "error: --delta must be a finite number >= 0 (percentage points), got -1.0"),
    (["--noise_prune_potential=median"],
     "error: unknown --noise_prune_potential 'median'; allowed: per_parent, population_mean"),
])
def test_noise_stage_bad_input_is_one_line(tiny_population, flags, message):
    result = run_stage("robustness_tests.noise_similarity", f"--workdir={tiny_population}",
                       *flags, check=False)
    assert result.returncode == 2
    assert error_lines(result) == [message]
    assert not os.path.exists(os.path.join(tiny_population, "robustness"))


def test_new_columns_are_documented():
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "docs", "robustness.md")).read()
    from pie.analysis import noise_potential
    for column in (noise_potential.COLUMNS + noise_potential.PER_SEED_COLUMNS
                   + robustness.EXCESS_ERROR_FIT_COLUMNS):
        assert f"`{column}`" in text, column


# ---------------------------------------------------------------------------- SIS


def test_feature_groups_pixels_patches_and_vectors():
    from pie.analysis import sis
    groups, count = sis.feature_groups((4, 6, 2), patch=2)
    assert count == 6
    image = groups.reshape(4, 6, 2)
    assert (image[..., 0] == image[..., 1]).all()  # channels of a pixel together
    assert image[:, :, 0].tolist() == [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                       [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]
    assert sis.feature_groups((5,))[1] == 5
    with pytest.raises(ValueError, match=r"^patch=4 does not divide the 4x6 image; allowed: "
                                         r"1, 2$"):
        sis.feature_groups((4, 6, 2), patch=4)


def _toy_model(weights):
    """Softmax of a fixed linear map: a model whose every output we can recompute."""
    def predict_proba(batch):
        logits = batch.reshape(len(batch), -1).astype(np.float64) @ weights
        logits -= logits.max(axis=1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return predict_proba


def _naive_removal_order(predict_proba, image, groups, n_features, baseline):
    """Backward selection one candidate at a time, straight from the definition."""
    flat = image.reshape(-1).copy()
    target = np.argmax(predict_proba(image[None])[0])
    present, order = list(range(n_features)), []
    while present:
        best, best_conf = None, -np.inf
        for feature in present:  # ascending: the first best wins ties
            trial = flat.copy()
            for other in order + [feature]:
                trial[groups == other] = baseline
            conf = predict_proba(trial.reshape((1,) + image.shape))[0, target]
            if conf > best_conf:
                best, best_conf = feature, conf
        order.append(best)
        present.remove(best)
    return order


@pytest.mark.parametrize("patch, chunk", [(1, 1 << 24), (2, 50)])
def test_sis_removal_order_matches_the_definition(patch, chunk):
    from pie.analysis import sis
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    model = _toy_model(rng.normal(size=(32, 3)))
    groups, count = sis.feature_groups(x.shape[1:], patch)
    order = sis.removal_order(model, x, groups, count, baseline=0.0, chunk_elements=chunk)
    for i in range(len(x)):
        assert order[i].tolist() == _naive_removal_order(model, x[i], groups, count, 0.0)
    assert (np.sort(order, axis=1) == np.arange(count)).all()
    masks = sis.selected_masks(order, groups, 0.25)  # ceil(0.25 F) last removed
    kept = int(np.ceil(0.25 * count))
    for i in range(len(x)):
        expected = np.isin(groups, order[i, -kept:])
        assert (masks[i] == expected).all()


def _confidence_with(model, image, groups, features, target):
    """The model's probability of `target` when only `features` are kept (others at 0)."""
    kept = np.where(np.isin(groups, list(features)), image.reshape(-1), 0.0)
    return model(kept.reshape((1,) + image.shape).astype(np.float32))[0, target]


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_sis_is_sufficient_and_removing_any_element_breaks_it(threshold):
    from pie.analysis import sis
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 4, 4, 1)).astype(np.float32)
    model = _toy_model(0.4 * rng.normal(size=(16, 3)))
    groups, count = sis.feature_groups(x.shape[1:], 1)
    selection = sis.backward_selection(model, x, groups, count, baseline=0.0)
    chosen, has_sis = sis.sufficient_subsets(selection, threshold)
    full = model(x)
    predicted = full.argmax(axis=1)
    np.testing.assert_array_equal(selection.predicted, predicted)
    # Images whose whole input is below tau have no SIS (and no features).
    np.testing.assert_array_equal(has_sis, full.max(axis=1) >= threshold)
    assert 0 < has_sis.sum() < len(x)
    assert not chosen[~has_sis].any()
    sizes = []
    for i in np.nonzero(has_sis)[0]:
        subset = set(np.nonzero(chosen[i])[0])
        sizes.append(len(subset))
        # sufficient: the subset alone keeps the predicted class's confidence >= tau
        assert _confidence_with(model, x[i], groups, subset, predicted[i]) >= threshold
        # minimal: without any one of its elements the confidence falls below tau
        for feature in subset:
            assert _confidence_with(model, x[i], groups, subset - {feature},
                                    predicted[i]) < threshold
        # and it is the last-removed part of the backward selection's order
        assert subset == set(selection.order[i, count - len(subset):])
    assert max(sizes) > 0 and min(sizes) < count


def test_sis_threshold_must_be_a_probability():
    from pie.analysis import sis
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"^threshold must be a number in \[0, 1\], got "):
            sis.check_threshold(bad)
    assert sis.check_threshold(0) == 0.0 and sis.check_threshold(1) == 1.0


def test_sis_stage_on_digits_and_its_bad_input(shifted, tiny_population):
    from robustness_tests import informative_features
    # ranking: Lost in Pruning's last-removed share at threshold 0
    assert informative_features.run(shifted, images=6, fraction=0.25, seed=0,
                                    batch_size=512, force=True, method="ranking", patch=2)
    summary = pd.read_csv(Workdir(shifted).file("informative_features"))
    assert list(summary.columns) == informative_features.SUMMARY_COLUMNS
    assert (summary["selection"] == "ranking").all() and (summary["patch"] == 2).all()
    assert (summary["features"] == 16).all() and summary["iou_mean"].between(0, 1).all()
    assert (summary["no_sis"] == 0).all() and summary["sis_threshold"].isna().all()
    per_image = pd.read_csv(Workdir(shifted).file("informative_features_per_image"))
    # 4 of 16 patches each: IoU of two 4-patch sets is k / (8 - k)
    assert set(np.round(per_image["iou"], 6)) <= {round(k / (8 - k), 6) for k in range(5)}
    assert (per_image["features_kept"] == 4).all()
    # sis: every member's subset keeps its own predicted class at >= tau
    assert informative_features.run(shifted, images=6, fraction=0.25, seed=0,
                                    batch_size=512, force=True, method="sis", patch=2,
                                    sis_threshold=0.3)
    summary = pd.read_csv(Workdir(shifted).file("informative_features"))
    per_image = pd.read_csv(Workdir(shifted).file("informative_features_per_image"))
    assert list(per_image.columns) == informative_features.PER_IMAGE_COLUMNS
    assert (summary["selection"] == "sis").all() and (summary["sis_threshold"] == 0.3).all()
    with_sis = per_image[per_image["has_sis"]]
    assert (with_sis["conf_own_mask"] >= 0.3 - 1e-6).all()
    assert with_sis["features_kept"].between(0, 16).all()
    assert per_image.loc[~per_image["has_sis"], ["conf_own_mask", "iou"]].isna().all().all()
    counted = per_image.assign(no=~per_image["has_sis"]).groupby("method")["no"].sum()
    assert summary.set_index("method")["no_sis"].to_dict() == counted.to_dict()
    for flags, message in (
            (["--method=lime"], "error: unknown --method 'lime'; allowed: gradient, sis, ranking"),
            (["--method=sis", "--sis_threshold=1.5"],
             "error: --sis_threshold must be in [0, 1], got 1.5"),
            (["--method=sis", "--sis_threshold=-0.1"],
             "error: --sis_threshold must be in [0, 1], got -0.1"),
            (["--method=sis", "--patch=3"],
             "error: --patch=3 does not divide the 8x8 image; allowed: 1, 2, 4, 8"),
            (["--patch=2"], "error: --patch applies to --method=sis and ranking only: the "
                            "gradient proxy ranks single input elements")):
        result = run_stage("robustness_tests.informative_features",
                           f"--workdir={tiny_population}", *flags, check=False)
        assert result.returncode == 2
        assert error_lines(result) == [message]
    assert not os.path.exists(os.path.join(tiny_population, "robustness"))


# -------------------------------------------------------------------------- report


def test_report_shows_the_fit_the_noise_potential_and_which_selection(tmp_path):
    import html
    from pie.report import build
    from test_report import make_workdir, page_sections
    workdir = make_workdir(str(tmp_path / "w"))

    def page():
        build.build_report(workdir, force=True, log=lambda message: None)
        with open(os.path.join(workdir, "report", "index.html")) as handle:
            return page_sections(handle.read())

    found = page()
    classes, body = found["excess_error_fit"]
    assert "not-measured" not in classes and "<img" in body
    fit = pd.read_csv(os.path.join(workdir, "robustness", "excess_error_fit.csv"))
    row = fit[(fit["distribution"] == robustness.MEAN_CORRUPTION)].iloc[0]
    text = html.unescape(body)
    assert f"{row['slope']:+.2f}" in text and f"{row['slope_ci_low']:+.2f}" in text
    assert "Fit on mean_corruption" in text
    noise = html.unescape(found["noise_similarity"][1])
    assert noise.count("<img") == 2 and "Noise prune potential: for each noise draw" in noise
    section = html.unescape(found["informative_features"][1])
    assert "not backward selection" in section
    assert "softmax probability of the class the model predicts" in section
    path = os.path.join(workdir, "robustness", "informative_features.csv")
    features = pd.read_csv(path).assign(selection="ranking", patch=2, features=196)
    records.write_csv(path, features)
    assert "(population means)" in noise  # a table without `rule`: the earlier rule
    noise_path = os.path.join(workdir, "robustness", "noise_prune_potential.csv")
    records.write_csv(noise_path, pd.read_csv(noise_path).assign(rule="per_parent"))
    found = page()
    assert ("Features ranked by backward selection at threshold 0 (Lost in Pruning's use of "
            "SIS) over 2x2 patches: the last-removed 10% of 196 features") in html.unescape(
        found["informative_features"][1])
    assert "exceeds its own dense parent's error on the same noisy images" in html.unescape(
        found["noise_similarity"][1])
    from pie.report import sections
    sis_table = features.assign(selection="sis", sis_threshold=0.9,
                                no_sis=[3] + [0] * (len(features) - 1))
    assert ("sufficient input subset (Carter et al.) over 2x2 patches, the smallest set of "
            "last-removed features of 196 that alone keeps its confidence in its predicted "
            "class at or above 0.9; 3 image x pair rows had no such subset"
            ) in sections._selection_note(sis_table)
    # A table of an older version, without the columns --method added, is refused:
    # the report reads only the writer's whole schema (rerun the stage).
    records.write_csv(path, features.drop(columns=["sis_threshold", "no_sis"]))
    with pytest.raises(records.ContractError, match=r"lacks columns \['sis_threshold', "
                       r"'no_sis'\]: rerun the stage that writes it"):
        page()
    records.write_csv(path, features)
    os.remove(os.path.join(workdir, "robustness", "noise_prune_potential.csv"))
    assert "Noise prune potential not measured" in html.unescape(page()["noise_similarity"][1])
