"""Robustness of compressed populations under distribution shift (Liebenwein et al.).

Vectorised numpy / pandas, no TensorFlow, so the analysis stage and the tests stay
light. The stage scripts in `robustness_tests/` read the files, call these
functions and write their results; `docs/robustness.md` defines every column.

    accuracy = robustness.with_mean_corruption(accuracy)    # member x distribution
    per_seed, summary = robustness.excess_error(accuracy)
    potential = robustness.prune_potential(accuracy, delta=0.5)
    fit = robustness.excess_error_fit(per_seed)              # excess error ~ slope x sparsity
    robustness.noise_prune_potential(noisy_accuracy, 0.5)    # per method, eps: over draws
    headline = robustness.prune_potential_summary(accuracy, delta=0.5)  # one row per method
    robustness.agreement(labels_a, labels_b)                 # noise similarity
    robustness.softmax_l2(probs_a, probs_b)
    masks = robustness.top_feature_masks(scores, 0.1)        # informative features
    robustness.mask_iou(masks_a, masks_b)

Errors are in percentage points (100 x (1 - top-1)) everywhere, like `delta`.
"""
import math
import re

import numpy as np
import pandas as pd

from pie.analysis import stats
from pie.io import records
from pie.io.workdir import Workdir

MEAN_CORRUPTION = "mean_corruption"
DENSE_REFERENCE = "dense_reference"
# A synthetic or precomputed corruption: `<corruption>/<severity>`, e.g. `fog/3`.
CORRUPTION_PATTERN = re.compile(r"^[A-Za-z0-9_]+/[0-9]+$")
# Mean over the corruptions at one severity, when several severities were run.
MEAN_SEVERITY_PREFIX = "mean_severity_"
MEAN_SEVERITY_PATTERN = re.compile(r"^mean_severity_[0-9]+$")
# Comparisons of errors computed from counts: equal up to float rounding counts as equal.
TOLERANCE = 1e-9

ACCURACY_COLUMNS = [
    "member_id", "method", "sparsity", "seed", "distribution", "top1", "n_images",
    "n_distributions",
]
EXCESS_ERROR_SEED_COLUMNS = [
    "method", "sparsity", "seed", "member_id", "distribution", "error_clean", "error",
    "dense_reference", "dense_error_clean", "dense_error", "excess_error",
]
EXCESS_ERROR_COLUMNS = [
    "method", "sparsity", "distribution", "excess_error_mean", "excess_error_std",
    "n_seeds", "n_paired", "error_shift_mean", "dense_error_shift_mean",
]
PRUNE_POTENTIAL_COLUMNS = [
    "method", "distribution", "prune_potential", "prune_potential_seed_mean",
    "prune_potential_seed_std", "n_seeds", "delta", "dense_error", "n_sparsities",
]
PRUNE_POTENTIAL_SEED_COLUMNS = ["method", "distribution", "seed", "prune_potential"]
PRUNE_POTENTIAL_SUMMARY_COLUMNS = [
    "method", "delta", "n_seeds", "clean_mean", "clean_std", "n_shifted", "shifted_mean",
    "shifted_std", "shifted_min", "shifted_min_distribution", "monotone", "n_paired_seeds",
    "difference_mean", "difference_std", "difference_ci_low", "difference_ci_high",
    "difference_p_value", "n_seeds_lower_shifted", "ci_approximate", "differences_per_seed",
]
_MEMBER_KEYS = ["member_id", "method", "sparsity", "seed"]


# --------------------------------------------------------------------------- checks


def _require_columns(frame, columns, what):
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")


def _check_delta(delta):
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (
            math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0 (percentage points), got {delta!r}")


def _require_dense(accuracy):
    if not (accuracy["method"] == records.DENSE_METHOD).any():
        raise records.ContractError(
            f"no dense population (no member with method == '{records.DENSE_METHOD}'): "
            "excess error and prune potential compare every variant with it")


def _require_clean(accuracy):
    if not (accuracy["distribution"] == records.CLEAN).any():
        raise records.ContractError(
            "no clean predictions: excess error and prune potential are measured against "
            "the clean test set; run pie_dataset_gen.predictions first")


def is_corruption(distributions):
    """Which names (a Series) are `<corruption>/<severity>` corruptions."""
    return pd.Series(distributions).astype(str).str.match(CORRUPTION_PATTERN.pattern).to_numpy()


def distribution_order(distributions):
    """Sort key: clean first, then shifted sets by name, the means last
    (mean_corruption, then mean_severity_<k>)."""
    names = pd.Series(distributions).astype(str)
    rank = np.where(names == records.CLEAN, 0, np.where(is_mean(names), 2, 1))
    return pd.Series(rank, index=names.index).astype(str) + names


def is_mean(distributions):
    """Which names (a Series) are means written by with_mean_corruption."""
    names = pd.Series(distributions).astype(str)
    return ((names == MEAN_CORRUPTION) | names.str.match(MEAN_SEVERITY_PATTERN.pattern)).to_numpy()


def mean_severity(severity):
    """Name of the per-severity mean row: `mean_severity_3`."""
    return f"{MEAN_SEVERITY_PREFIX}{int(severity)}"


def error_pp(top1):
    """Top-1 accuracy (fraction) to error in percentage points."""
    return 100.0 * (1.0 - np.asarray(top1, np.float64))


# ------------------------------------------------------------------------- accuracy


def with_mean_corruption(accuracy):
    """Adds one `mean_corruption` row per member: its mean top-1 over the corruptions,
    and, when the corruptions span several severities, one `mean_severity_<k>` row
    per severity k: the mean over the corruptions at that severity.

    Only `<corruption>/<severity>` distributions that every member of the table has
    are averaged, so every member's mean covers the same sets; natural shifts (e.g.
    `imagenet_a`) are not corruptions and are left out (so are corruptions that
    are the identity on the images, e.g. saturate on grey ones: the corruption
    stage does not run them). `n_images` of a mean row is the sum over the averaged sets, `n_distributions` their number.
    Without any complete corruption the table comes back unchanged (with
    `n_distributions` = 1).
    """
    _require_columns(accuracy, _MEMBER_KEYS + ["distribution", "top1", "n_images"], "accuracy")
    accuracy = accuracy.assign(n_distributions=1)
    accuracy = accuracy[~is_mean(accuracy["distribution"])]
    shifted = accuracy[is_corruption(accuracy["distribution"])]
    coverage = shifted.groupby("distribution")["member_id"].nunique()
    complete = coverage.index[coverage == accuracy["member_id"].nunique()]
    shifted = shifted[shifted["distribution"].isin(complete)]
    if shifted.empty:
        return accuracy[ACCURACY_COLUMNS].reset_index(drop=True)
    severity = shifted["distribution"].astype(str).str.rsplit("/", n=1).str[1].astype(int)
    groups = [(MEAN_CORRUPTION, shifted)]
    if severity.nunique() > 1:
        groups += [(mean_severity(level), shifted[severity == level])
                   for level in sorted(severity.unique())]
    means = []
    for name, rows in groups:
        mean = rows.groupby(_MEMBER_KEYS, as_index=False, sort=False).agg(
            top1=("top1", "mean"), n_images=("n_images", "sum"),
            n_distributions=("distribution", "size"))
        mean["distribution"] = name
        means.append(mean)
    combined = pd.concat([accuracy] + means, ignore_index=True)
    return sort_by_member(combined)[ACCURACY_COLUMNS]


def sort_by_member(frame):
    """Rows sorted by member_id, then distribution (clean first, mean_corruption last)."""
    order = frame.assign(_order=distribution_order(frame["distribution"]).to_numpy())
    return order.sort_values(["member_id", "_order"], kind="stable").drop(
        columns="_order").reset_index(drop=True)


# ---------------------------------------------------------------------- excess error


def excess_error(accuracy):
    """Excess error of every compressed variant on every shifted distribution.

    e = [err(pruned, D') - err(pruned, clean)] - [err(dense, D') - err(dense, clean)],
    in percentage points, per seed: the variant's seed-k member is paired with the
    dense seed-k member when it exists (`dense_reference` = `seed`), else with the
    dense population's mean errors on the members that have both sets
    (`population_mean`). Returns `(per_seed, summary)`: one row per member x
    distribution, and per variant x distribution the mean and sample std (ddof 1;
    NaN for one seed) over seeds.
    """
    _require_columns(accuracy, _MEMBER_KEYS + ["distribution", "top1"], "accuracy")
    _require_clean(accuracy)
    _require_dense(accuracy)
    errors = accuracy[_MEMBER_KEYS + ["distribution"]].assign(error=error_pp(accuracy["top1"]))
    clean = errors.loc[errors["distribution"] == records.CLEAN, ["member_id", "error"]]
    shifted = errors[errors["distribution"] != records.CLEAN].merge(
        clean.rename(columns={"error": "error_clean"}), on="member_id", how="inner")
    is_dense = shifted["method"] == records.DENSE_METHOD
    dense, variants = shifted[is_dense], shifted[~is_dense]
    dense_by_seed = dense[["seed", "distribution", "error_clean", "error"]].rename(
        columns={"error_clean": "dense_error_clean", "error": "dense_error"})
    dense_mean = dense.groupby("distribution", as_index=False)[["error_clean", "error"]].mean()
    dense_mean = dense_mean.rename(columns={"error_clean": "dense_error_clean",
                                            "error": "dense_error"})
    paired = variants.merge(dense_by_seed, on=["seed", "distribution"], how="left",
                            validate="many_to_one")
    fallback = variants[["distribution"]].merge(dense_mean, on="distribution", how="left")
    has_seed = paired["dense_error"].notna().to_numpy()
    for column in ("dense_error_clean", "dense_error"):
        paired[column] = np.where(has_seed, paired[column], fallback[column].to_numpy())
    paired["dense_reference"] = np.where(has_seed, "seed", "population_mean")
    paired = paired[paired["dense_error"].notna()].copy()
    paired["excess_error"] = ((paired["error"] - paired["error_clean"])
                              - (paired["dense_error"] - paired["dense_error_clean"]))
    paired = _sort_variant_rows(paired, ["seed"])[EXCESS_ERROR_SEED_COLUMNS]

    shifts = paired.assign(
        error_shift=paired["error"] - paired["error_clean"],
        dense_error_shift=paired["dense_error"] - paired["dense_error_clean"],
        is_paired=paired["dense_reference"] == "seed")
    summary = shifts.groupby(["method", "sparsity", "distribution"], as_index=False).agg(
        excess_error_mean=("excess_error", "mean"), excess_error_std=("excess_error", "std"),
        n_seeds=("excess_error", "size"), n_paired=("is_paired", "sum"),
        error_shift_mean=("error_shift", "mean"),
        dense_error_shift_mean=("dense_error_shift", "mean"))
    return paired, _sort_variant_rows(summary, [])[EXCESS_ERROR_COLUMNS]


def _sort_variant_rows(frame, extra_keys):
    order = frame.assign(_order=distribution_order(frame["distribution"]).to_numpy())
    keys = ["method", "sparsity", "_order"] + list(extra_keys)
    return order.sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)


# -------------------------------------------------------------------- prune potential


def prune_potential(accuracy, delta=0.5, monotone=False):
    """Prune potential of every pruning method on every distribution.

    P_delta(D) = the largest sparsity among the method's variants (sparsity > 0)
    whose error on D is at most the dense error on D plus `delta` percentage points;
    0 when none qualifies. `prune_potential` compares population mean errors;
    per seed k the seed-k members are compared with the dense seed-k member (or the
    dense population mean when there is none), giving `prune_potential_seed_mean`
    and `_std` (ddof 1) over seeds. Methods without a pruned variant (dense,
    quantized) have no prune potential and no rows. With `monotone`, a sparsity
    passes only when every lower sparsity of the method passes too (on the same
    distribution, and per seed for the per-seed values).
    """
    # Quantized exports of pruned members (quant_sparse, quant_pruned_int8) keep their
    # source's sparsity but are not a pruning method: no prune potential of their own.
    pruned, dense, dense_mean = _pruned_errors(accuracy, delta)

    population = pruned.groupby(["method", "sparsity", "distribution"], as_index=False)[
        "error"].mean().merge(dense_mean.reset_index(), on="distribution", how="inner")
    population["passing"] = _passing_sparsity(population, delta, monotone,
                                              ["method", "distribution"])
    population = population.groupby(["method", "distribution"], as_index=False).agg(
        prune_potential=("passing", "max"), dense_error=("dense_error", "first"),
        n_sparsities=("sparsity", "nunique"))

    by_seed = _per_seed_potential(pruned, dense, dense_mean, delta, monotone)
    seeds = by_seed.groupby(["method", "distribution"], as_index=False).agg(
        prune_potential_seed_mean=("prune_potential", "mean"),
        prune_potential_seed_std=("prune_potential", "std"),
        n_seeds=("prune_potential", "size"))

    table = population.merge(seeds, on=["method", "distribution"], how="left")
    table["delta"] = float(delta)
    table = table.assign(_order=distribution_order(table["distribution"]).to_numpy())
    table = table.sort_values(["method", "_order"], kind="stable").reset_index(drop=True)
    return table[PRUNE_POTENTIAL_COLUMNS]


def _pruned_errors(accuracy, delta):
    """(pruned member errors, dense member errors, dense mean error per distribution)."""
    _require_columns(accuracy, _MEMBER_KEYS + ["distribution", "top1"], "accuracy")
    _check_delta(delta)
    _require_dense(accuracy)
    errors = accuracy[_MEMBER_KEYS + ["distribution"]].assign(error=error_pp(accuracy["top1"]))
    is_dense = errors["method"] == records.DENSE_METHOD
    is_quantized = errors["method"].str.startswith(records.QUANTIZED_PREFIX)
    dense = errors[is_dense]
    pruned = errors[~is_dense & ~is_quantized & (errors["sparsity"] > 0)]
    return pruned, dense, dense.groupby("distribution")["error"].mean().rename("dense_error")


def _per_seed_potential(pruned, dense, dense_mean, delta, monotone=False):
    """P per (method, distribution, seed): the seed-k members against the dense seed-k
    member (or the dense population mean when there is none)."""
    per_seed = pruned.merge(
        dense[["seed", "distribution", "error"]].rename(columns={"error": "dense_error"}),
        on=["seed", "distribution"], how="left", validate="many_to_one")
    per_seed["dense_error"] = per_seed["dense_error"].fillna(
        per_seed["distribution"].map(dense_mean))
    per_seed = per_seed[per_seed["dense_error"].notna()].copy()
    per_seed["prune_potential"] = _passing_sparsity(per_seed, delta, monotone,
                                                    ["method", "distribution", "seed"])
    return per_seed.groupby(["method", "distribution", "seed"], as_index=False)[
        "prune_potential"].max()[PRUNE_POTENTIAL_SEED_COLUMNS]


def prune_potential_per_seed(accuracy, delta=0.5, monotone=False):
    """P_delta of every pruning method, distribution and seed (`PRUNE_POTENTIAL_SEED_COLUMNS`)."""
    pruned, dense, dense_mean = _pruned_errors(accuracy, delta)
    return _per_seed_potential(pruned, dense, dense_mean, delta, monotone)


def seed_differences(clean, shifted):
    """The paired comparison of per-seed prune potentials, clean against shifted.

    `clean`, `shifted`: Series indexed by seed (P(seed, clean) and the seed's mean
    of P(seed, D) over the shifts). Per seed present in both, d = clean - shifted;
    returns their mean, sample std, the paired t interval of the mean (95%) and the
    paired t-test's two-sided p-value (NaN with fewer than 2 seeds or constant d),
    the seeds where the shifted value is lower, and the differences as text.
    """
    seeds = sorted(set(clean.index) & set(shifted.index))
    a = clean.loc[seeds].to_numpy(np.float64)[:, None]
    b = shifted.loc[seeds].to_numpy(np.float64)[:, None]
    d = (a - b)[:, 0]
    _, p_value = stats.paired_t_test(a, b)
    low, high = stats.interval_of_test(a, b, "paired")
    return {"n_paired_seeds": len(seeds),
            "difference_mean": float(d.mean()) if len(d) else np.nan,
            "difference_std": float(d.std(ddof=1)) if len(d) > 1 else np.nan,
            "difference_ci_low": float(low[0]), "difference_ci_high": float(high[0]),
            "difference_p_value": float(p_value[0]),
            "n_seeds_lower_shifted": int((d > TOLERANCE).sum()),
            "ci_approximate": len(seeds) < stats.APPROXIMATE_BELOW,
            "differences_per_seed": " ".join(f"{seed}:{value:+.3g}"
                                             for seed, value in zip(seeds, d))}


def prune_potential_summary(accuracy, delta=0.5, monotone=False):
    """The headline prune potential: one row per pruning method.

    From the per-seed values P(seed, D) (`prune_potential_per_seed`):
      clean_mean, clean_std   mean and sample std (ddof 1) over seeds of P(seed, clean)
      shifted_mean, _std      per seed, the mean of P(seed, D) over the shifted
                              distributions D; then mean and std over seeds
      shifted_min             the minimum over shifted D of the seed mean of P(seed, D),
                              and the distribution that attains it
    Shifted distributions are every distribution but clean and the derived means
    (`mean_corruption`, `mean_severity_<k>`). NaN where there is no seed (std: fewer
    than 2) or no shift. The paired comparison of clean and shifted per seed:
    `seed_differences`. `monotone`: see `prune_potential`.
    """
    per_seed = prune_potential_per_seed(accuracy, delta, monotone)
    per_seed = per_seed[~is_mean(per_seed["distribution"])]
    clean = per_seed[per_seed["distribution"] == records.CLEAN]
    shifted = per_seed[per_seed["distribution"] != records.CLEAN]
    rows = []
    for method in sorted(per_seed["method"].unique()):
        own_clean = clean.loc[clean["method"] == method, "prune_potential"]
        own_shifted = shifted[shifted["method"] == method]
        seed_means = own_shifted.groupby("seed")["prune_potential"].mean()
        by_distribution = own_shifted.groupby("distribution")["prune_potential"].mean()
        clean_by_seed = clean[clean["method"] == method].groupby("seed")[
            "prune_potential"].mean()
        rows.append({**seed_differences(clean_by_seed, seed_means), "monotone": bool(monotone),
            "method": method, "delta": float(delta),
            "n_seeds": int(per_seed.loc[per_seed["method"] == method, "seed"].nunique()),
            "clean_mean": own_clean.mean(), "clean_std": own_clean.std(),
            "n_shifted": len(by_distribution),
            "shifted_mean": seed_means.mean(), "shifted_std": seed_means.std(),
            "shifted_min": by_distribution.min() if len(by_distribution) else np.nan,
            "shifted_min_distribution": (by_distribution.idxmin() if len(by_distribution)
                                         else ""),
        })
    return pd.DataFrame(rows, columns=PRUNE_POTENTIAL_SUMMARY_COLUMNS)


def _passing_sparsity(frame, delta, monotone=False, keys=()):
    """The row's sparsity when its error is within delta of the dense error, else 0.

    With `monotone`, a row passes only when every row of its `keys` group at a lower
    sparsity passes too (the grid read from the lowest sparsity up).
    """
    passes = frame["error"] <= frame["dense_error"] + delta + TOLERANCE
    if monotone:
        order = frame.assign(_passes=passes.astype(np.int64)).sort_values(
            list(keys) + ["sparsity"], kind="stable")
        passes = (order.groupby(list(keys), sort=False)["_passes"].cummin()
                  .reindex(frame.index).astype(bool))
    return frame["sparsity"].where(passes, 0.0).astype(np.float64)


# ----------------------------------------------------------------------- pairs


def comparison_pairs(manifest):
    """Which members are compared in the noise and feature studies.

    Every non-dense member with the dense member of the same seed (members whose
    seed has no dense member are left out), and the dense reference: dense seed
    s_i with the next dense seed s_(i+1 mod n) in sorted order, each unordered pair
    once (2 dense seeds give 1 pair, n >= 3 give n). Columns: method, sparsity,
    seed, member_id, reference_id (the dense member it is compared with).
    """
    _require_columns(manifest, _MEMBER_KEYS, "manifest")
    is_dense = manifest["method"] == records.DENSE_METHOD
    dense = manifest.loc[is_dense, ["seed", "member_id"]].drop_duplicates("seed")
    dense = dense.sort_values("seed", kind="stable").reset_index(drop=True)
    variants = manifest.loc[~is_dense, _MEMBER_KEYS].merge(
        dense.rename(columns={"member_id": "reference_id"}), on="seed", how="inner")
    n_dense = len(dense)
    if n_dense >= 2:
        following = dense.iloc[(np.arange(n_dense) + 1) % n_dense].reset_index(drop=True)
        reference = pd.DataFrame({
            "method": DENSE_REFERENCE, "sparsity": 0.0, "seed": dense["seed"],
            "member_id": dense["member_id"], "reference_id": following["member_id"]})
        reference = reference.iloc[:1] if n_dense == 2 else reference
    else:
        reference = pd.DataFrame(columns=variants.columns)
    pairs = pd.concat([variants, reference], ignore_index=True)
    pairs["sparsity"] = pairs["sparsity"].astype(np.float64)
    return pairs.sort_values(["method", "sparsity", "seed"], kind="stable").reset_index(drop=True)


def pairs_to_run(workdir, manifest):
    """The (member, dense reference) pairs, the manifest rows they use, their input files.

    Fails when nothing can be compared: no compressed member shares a seed with a
    dense member, and there are fewer than 2 dense members.
    """
    pairs = comparison_pairs(manifest)
    if pairs.empty:
        raise records.ContractError(
            "nothing to compare: no compressed member shares a seed with a dense member, "
            "and there are fewer than 2 dense members")
    needed = sorted(set(pairs["member_id"]) | set(pairs["reference_id"]))
    rows = manifest.set_index("member_id").loc[needed].reset_index()
    # The eval images come through dataset.json: a changed dataset reruns the stage.
    workdir = Workdir(workdir)
    inputs = [workdir.manifest, workdir.dataset_config] + [
        workdir.model_path(row) for row in rows.to_dict("records")]
    return pairs, rows, inputs


def summarise_pairs(per_pair, keys, values):
    """Mean and sample std (ddof 1) over pairs of each value column, per `keys` group."""
    aggregations = {}
    for value in values:
        aggregations[f"{value}_mean"] = (value, "mean")
        aggregations[f"{value}_std"] = (value, "std")
    aggregations["n_pairs"] = (values[0], "size")
    return per_pair.groupby(keys, as_index=False, sort=False).agg(**aggregations)


# ------------------------------------------------------------------- noise similarity


def agreement(labels_a, labels_b):
    """Share of equal labels along the last axis (images): (..., N) -> (...)."""
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.shape != labels_b.shape or labels_a.ndim == 0 or labels_a.shape[-1] == 0:
        raise ValueError("labels must be two non-empty arrays of one shape, got "
                         f"{labels_a.shape} and {labels_b.shape}")
    return (labels_a == labels_b).mean(axis=-1)


def softmax_l2(probs_a, probs_b):
    """Mean over images of the L2 distance of two softmax outputs: (..., N, C) -> (...)."""
    probs_a, probs_b = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    if probs_a.shape != probs_b.shape or probs_a.ndim < 2 or probs_a.shape[-2] == 0:
        raise ValueError("probabilities must be two arrays (..., images, classes) of one "
                         f"shape with images > 0, got {probs_a.shape} and {probs_b.shape}")
    return np.linalg.norm(probs_a - probs_b, axis=-1).mean(axis=-1)


def uniform_noise(shape, seed, draw):
    """U[-1, 1] noise of one draw, a function of (seed, draw) only (scaled by eps later)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(draw)]))
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


# --------------------------------------------------------------- informative features


def feature_count(n_features, fraction):
    """How many features the top `fraction` holds: ceil(fraction x n), at least 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return max(1, int(math.ceil(fraction * n_features - TOLERANCE)))


def top_feature_masks(scores, fraction):
    """Boolean masks (N, d) of each row's top `fraction` of features by score.

    `scores` is (N, ...) and is flattened per row. Ties go to the lower feature
    index, so a mask always holds exactly `feature_count(d, fraction)` features.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim < 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (images, features...) with images > 0, got {scores.shape}")
    flat = scores.reshape(scores.shape[0], -1)
    if not np.isfinite(flat).all():
        raise ValueError("scores must be finite")
    count = feature_count(flat.shape[1], fraction)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :count]
    masks = np.zeros(flat.shape, bool)
    np.put_along_axis(masks, top, True, axis=1)
    return masks


def mask_iou(masks_a, masks_b):
    """Per row |a and b| / |a or b| of two boolean masks (N, d); 1 when both are empty."""
    masks_a, masks_b = np.asarray(masks_a, bool), np.asarray(masks_b, bool)
    if masks_a.shape != masks_b.shape or masks_a.ndim != 2:
        raise ValueError(f"masks must be two (N, d) arrays of one shape, got "
                         f"{masks_a.shape} and {masks_b.shape}")
    intersection = (masks_a & masks_b).sum(axis=1)
    union = (masks_a | masks_b).sum(axis=1)
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


# --------------------------------------------------------------- noise prune potential

NOISE_PRUNE_POTENTIAL_COLUMNS = [
    "method", "eps", "noise_prune_potential_mean", "noise_prune_potential_mad",
    "noise_prune_potential_std", "draws", "delta", "dense_error_mean", "n_sparsities",
    "n_seeds", "images",
]


def noise_prune_potential(accuracy, delta=0.5):
    """Prune potential under input noise, per pruning method and eps (Lost in Pruning).

    `accuracy` has one row per member, eps and noise draw: method, sparsity, seed,
    eps, draw, top1, images. Per (eps, draw) every variant's population-mean error
    is compared with the dense population's mean error on the same noisy inputs;
    the draw's potential is the largest sparsity within `delta` points (0 when
    none), as `prune_potential` does per distribution. Then, over draws: mean,
    median absolute deviation (scipy, scale 1) and sample std (ddof 1). Dense and
    quantized methods have no rows.
    """
    from scipy import stats
    _require_columns(accuracy, ["method", "sparsity", "seed", "eps", "draw", "top1",
                                "images"], "accuracy")
    _check_delta(delta)
    _require_dense(accuracy)
    errors = accuracy.assign(error=error_pp(accuracy["top1"]))
    is_dense = errors["method"] == records.DENSE_METHOD
    is_quantized = errors["method"].str.startswith(records.QUANTIZED_PREFIX)
    dense = errors[is_dense].groupby(["eps", "draw"], as_index=False).agg(
        dense_error=("error", "mean"))
    pruned = errors[~is_dense & ~is_quantized & (errors["sparsity"] > 0)]
    if pruned.empty:
        return pd.DataFrame(columns=NOISE_PRUNE_POTENTIAL_COLUMNS)
    variants = pruned.groupby(["method", "sparsity", "eps", "draw"], as_index=False).agg(
        error=("error", "mean"), n_seeds=("seed", "nunique"), images=("images", "max"))
    variants = variants.merge(dense, on=["eps", "draw"], how="inner")
    variants["passing"] = _passing_sparsity(variants, delta)
    per_draw = variants.groupby(["method", "eps", "draw"], as_index=False).agg(
        potential=("passing", "max"), dense_error=("dense_error", "first"),
        n_sparsities=("sparsity", "nunique"), n_seeds=("n_seeds", "min"),
        images=("images", "max"))
    table = per_draw.groupby(["method", "eps"], as_index=False).agg(
        noise_prune_potential_mean=("potential", "mean"),
        noise_prune_potential_mad=("potential", lambda v: float(
            stats.median_abs_deviation(v.to_numpy(), scale=1.0))),
        noise_prune_potential_std=("potential", "std"), draws=("draw", "nunique"),
        dense_error_mean=("dense_error", "mean"), n_sparsities=("n_sparsities", "max"),
        n_seeds=("n_seeds", "min"), images=("images", "max"))
    table["delta"] = float(delta)
    # Means of equal sparsities (0.9 x 20 / 20) carry float noise in the last digits.
    floats = ["noise_prune_potential_mean", "noise_prune_potential_mad",
              "noise_prune_potential_std", "dense_error_mean"]
    table[floats] = table[floats].round(10) + 0.0
    table = table.sort_values(["method", "eps"], kind="stable").reset_index(drop=True)
    return table[NOISE_PRUNE_POTENTIAL_COLUMNS]


# ------------------------------------------------------- excess error vs prune ratio

EXCESS_ERROR_FIT_COLUMNS = [
    "method", "distribution", "slope", "slope_ci_low", "slope_ci_high", "confidence",
    "n_points", "n_sparsities", "n_seeds", "ci_method", "ci_approximate",
]
FIT_INTERVAL = "seed_clustered_t"


def _origin_slope(x, y, axis=-1):
    """Least-squares slope of y = b x (no intercept): sum(x y) / sum(x^2)."""
    return np.sum(x * y, axis=axis) / np.sum(x * x, axis=axis)


def excess_error_fit(per_seed, confidence=0.95):
    """Excess error against prune ratio: a line through the origin per method.

    For each pruning method and distribution, the per-seed excess errors
    (`excess_error` rows: x = sparsity, y = excess error in points) are fitted by
    least squares with y = slope x. The members of one seed share their dense
    reference, so the slope's interval treats each seed's points as one cluster
    (`stats.clustered_origin_slope`: the cluster-robust t interval, k - 1 degrees
    of freedom over k seeds; with one point per seed the points are the clusters);
    the band at prune ratio x is [x slope_ci_low, x slope_ci_high]. Below
    `stats.APPROXIMATE_BELOW` seeds the interval is flagged approximate. Dense and
    quantized methods, and rows at sparsity 0, are left out; with fewer than 2
    clusters the interval is NaN.
    """
    _require_columns(per_seed, ["method", "sparsity", "distribution", "excess_error"],
                     "per_seed")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    points = per_seed[(per_seed["method"] != records.DENSE_METHOD)
                      & ~per_seed["method"].str.startswith(records.QUANTIZED_PREFIX)
                      & (per_seed["sparsity"] > 0) & per_seed["excess_error"].notna()]
    rows = []
    for (method, distribution), group in points.groupby(["method", "distribution"],
                                                        sort=False):
        x = group["sparsity"].to_numpy(np.float64)
        y = group["excess_error"].to_numpy(np.float64)
        cluster = (group["seed"].to_numpy() if "seed" in group.columns
                   else np.arange(len(group)))
        _, index = np.unique(cluster, return_inverse=True)
        xy_sums = np.bincount(index, weights=x * y)
        xx_sums = np.bincount(index, weights=x * x)
        _, low, high = stats.clustered_origin_slope(xy_sums, xx_sums, confidence)
        rows.append((method, distribution, float(_origin_slope(x, y)), float(low),
                     float(high), float(confidence), len(x), int(np.unique(x).size),
                     len(xy_sums), FIT_INTERVAL, len(xy_sums) < stats.APPROXIMATE_BELOW))
    table = pd.DataFrame(rows, columns=EXCESS_ERROR_FIT_COLUMNS)
    table = table.assign(_order=distribution_order(table["distribution"]).to_numpy())
    table = table.sort_values(["method", "_order"], kind="stable").drop(columns="_order")
    return table.reset_index(drop=True)
