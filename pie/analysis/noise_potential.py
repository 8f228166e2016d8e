"""Noise prune potential as Lost in Pruning computes it: each pruned network against its
own parent.

For a noise level eps and noise draw d, a pruned member *passes* when its error on the
noisy images exceeds its parent's error on the same noisy images by no more than
`delta` percentage points (it fails when the excess is > delta). Its parent is the
dense network it descends from: the `parent_id` chain of the manifest followed up to
a dense member, else the dense member of its seed. For each method, seed (parent),
eps and draw the potential is the largest sparsity among that seed's passing members,
0 when none passes. `summary` reports it per seed (over draws) and over every seed and
draw; `population_mean` keeps the earlier rule (population-mean errors against the
dense population's mean, `pie.analysis.robustness.noise_prune_potential`), one flag
away in the noise-similarity stage.

    parents = noise_potential.dense_parents(manifest)        # {member id: dense parent id}
    per_draw = noise_potential.per_parent(accuracy, parents, delta=0.5)
    per_seed, table = noise_potential.summary(per_draw, delta=0.5)

Errors are in percentage points, like `delta`.
"""
import numpy as np
import pandas as pd

from pie.analysis import robustness
from pie.io import records

RULES = ("per_parent", "population_mean")
# noise_similarity.csv and noise_similarity_per_pair.csv (robustness_tests.noise_similarity).
SIMILARITY_COLUMNS = ["method", "sparsity", "eps", "agreement_mean", "agreement_std",
                      "l2_mean", "l2_std", "n_pairs", "draws", "images"]
SIMILARITY_PAIR_COLUMNS = ["method", "sparsity", "seed", "member_id", "reference_id", "eps",
                           "agreement", "agreement_draw_std", "l2", "l2_draw_std", "draws",
                           "images"]
ACCURACY_COLUMNS = ["member_id", "method", "sparsity", "seed", "eps", "draw", "top1", "images"]
PER_DRAW_COLUMNS = ["method", "eps", "seed", "parent_id", "draw", "potential",
                    "parent_error", "n_sparsities", "images"]
PER_SEED_COLUMNS = [
    "method", "eps", "seed", "parent_id", "noise_prune_potential_mean",
    "noise_prune_potential_mad", "noise_prune_potential_std", "draws", "delta",
    "parent_error_mean", "n_sparsities", "images",
]
# The summary keeps the earlier table's columns (the report reads them) and adds two.
COLUMNS = robustness.NOISE_PRUNE_POTENTIAL_COLUMNS + ["noise_prune_potential_seed_std", "rule"]


def check_rule(rule):
    if rule not in RULES:
        raise ValueError(f"unknown noise prune potential rule {rule!r}; allowed: "
                         f"{', '.join(RULES)}")


def dense_parents(manifest):
    """{pruned or quantized member id: the id of the dense member it descends from}.

    Follows `parent_id` (when the manifest has it) up to a dense member; a member
    without one (trained from scratch, or a chain that leaves the manifest) gets the
    dense member of its seed. Members with neither are left out.
    """
    robustness._require_columns(manifest, ["member_id", "method", "seed"], "manifest")
    methods = dict(zip(manifest["member_id"], manifest["method"]))
    has_parent = "parent_id" in manifest.columns
    # an empty parent_id reads back as NaN (a float column when every one is empty)
    parent_of = {member_id: parent for member_id, parent in zip(
        manifest["member_id"], manifest["parent_id"]) if isinstance(parent, str) and parent
    } if has_parent else {}
    dense = manifest[manifest["method"] == records.DENSE_METHOD]
    dense_of_seed = dict(zip(dense["seed"], dense["member_id"]))
    parents = {}
    for member_id, method, seed in zip(manifest["member_id"], manifest["method"],
                                       manifest["seed"]):
        if method == records.DENSE_METHOD:
            continue
        current, found = member_id, None
        for _ in range(len(manifest)):  # a chain longer than the manifest is a cycle
            current = parent_of.get(current, "")
            if not current or current not in methods:
                break
            if methods[current] == records.DENSE_METHOD:
                found = current
                break
        found = found or dense_of_seed.get(seed)
        if found is not None:
            parents[member_id] = found
    return parents


def per_parent(accuracy, parents, delta=0.5):
    """The potential of every (method, seed, eps, draw): `PER_DRAW_COLUMNS`.

    `accuracy`: one row per member, eps and draw (`ACCURACY_COLUMNS`); `parents`:
    {member id: dense parent id} (`dense_parents`). A pruned member (not dense, not
    quantized, sparsity > 0) with its parent's row on the same (eps, draw) passes when
    error - parent error <= delta (up to float rounding); the potential is the largest
    passing sparsity of the method among the members of one parent, else 0.
    """
    robustness._require_columns(accuracy, ACCURACY_COLUMNS, "accuracy")
    robustness._check_delta(delta)
    robustness._require_dense(accuracy)
    errors = accuracy[ACCURACY_COLUMNS].assign(error=robustness.error_pp(accuracy["top1"]))
    is_dense = errors["method"] == records.DENSE_METHOD
    is_quantized = errors["method"].str.startswith(records.QUANTIZED_PREFIX)
    pruned = errors[~is_dense & ~is_quantized & (errors["sparsity"] > 0)].copy()
    pruned["parent_id"] = pruned["member_id"].map(parents)
    parent_errors = errors.loc[is_dense, ["member_id", "eps", "draw", "error"]].rename(
        columns={"member_id": "parent_id", "error": "parent_error"})
    pruned = pruned.merge(parent_errors, on=["parent_id", "eps", "draw"], how="inner",
                          validate="many_to_one")
    if pruned.empty:
        return pd.DataFrame(columns=PER_DRAW_COLUMNS)
    passes = pruned["error"] - pruned["parent_error"] <= delta + robustness.TOLERANCE
    pruned["passing"] = pruned["sparsity"].where(passes, 0.0).astype(np.float64)
    per_draw = pruned.groupby(["method", "eps", "seed", "parent_id", "draw"],
                              as_index=False).agg(
        potential=("passing", "max"), parent_error=("parent_error", "first"),
        n_sparsities=("sparsity", "nunique"), images=("images", "max"))
    return per_draw.sort_values(["method", "eps", "seed", "draw"], kind="stable").reset_index(
        drop=True)[PER_DRAW_COLUMNS]


def _mad(values):
    from scipy import stats
    return float(stats.median_abs_deviation(np.asarray(values, np.float64), scale=1.0))


def summary(per_draw, delta=0.5):
    """(per seed, per method and eps) tables of `per_parent`'s potentials.

    Per seed (`PER_SEED_COLUMNS`): mean, MAD (scale 1) and sample std over draws.
    Per method and eps (`COLUMNS`): mean, MAD and sample std over every (seed, draw)
    value; `noise_prune_potential_seed_std` the sample std over seeds of the per-seed
    means (NaN with one seed); `dense_error_mean` the parents' mean error.
    """
    robustness._require_columns(per_draw, PER_DRAW_COLUMNS, "per_draw")
    robustness._check_delta(delta)
    if per_draw.empty:
        return pd.DataFrame(columns=PER_SEED_COLUMNS), pd.DataFrame(columns=COLUMNS)
    per_seed = per_draw.groupby(["method", "eps", "seed", "parent_id"], as_index=False).agg(
        noise_prune_potential_mean=("potential", "mean"),
        noise_prune_potential_mad=("potential", _mad),
        noise_prune_potential_std=("potential", "std"), draws=("draw", "nunique"),
        parent_error_mean=("parent_error", "mean"), n_sparsities=("n_sparsities", "max"),
        images=("images", "max"))
    per_seed["delta"] = float(delta)
    table = per_draw.groupby(["method", "eps"], as_index=False).agg(
        noise_prune_potential_mean=("potential", "mean"),
        noise_prune_potential_mad=("potential", _mad),
        noise_prune_potential_std=("potential", "std"), draws=("draw", "nunique"),
        dense_error_mean=("parent_error", "mean"), n_sparsities=("n_sparsities", "max"),
        n_seeds=("seed", "nunique"), images=("images", "max"))
    seed_std = per_seed.groupby(["method", "eps"], as_index=False).agg(
        noise_prune_potential_seed_std=("noise_prune_potential_mean", "std"))
    table = table.merge(seed_std, on=["method", "eps"], how="left")
    table["delta"] = float(delta)
    table["rule"] = "per_parent"
    # Means of equal sparsities (0.9 x 20 / 20) carry float noise in the last digits.
    for frame, columns in ((per_seed, ["noise_prune_potential_mean", "noise_prune_potential_mad",
                                       "noise_prune_potential_std", "parent_error_mean"]),
                           (table, ["noise_prune_potential_mean", "noise_prune_potential_mad",
                                    "noise_prune_potential_std", "dense_error_mean",
                                    "noise_prune_potential_seed_std"])):
        frame[columns] = frame[columns].astype(np.float64).round(10) + 0.0
    per_seed = per_seed.sort_values(["method", "eps", "seed"], kind="stable")
    table = table.sort_values(["method", "eps"], kind="stable")
    return (per_seed.reset_index(drop=True)[PER_SEED_COLUMNS],
            table.reset_index(drop=True)[COLUMNS])


def tables(accuracy, parents, delta=0.5, rule="per_parent"):
    """(per seed, summary) of the stage: the summary by `rule`; per seed always by parent."""
    check_rule(rule)
    per_seed, table = summary(per_parent(accuracy, parents, delta), delta)
    if rule == "population_mean":
        table = robustness.noise_prune_potential(accuracy, delta).assign(
            noise_prune_potential_seed_std=np.nan, rule="population_mean")[COLUMNS]
    return per_seed, table
