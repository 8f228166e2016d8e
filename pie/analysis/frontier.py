"""What each variant saves against what it forgets: the cost-versus-forgetting frontier.

Every variant (all members sharing `(method, sparsity)`, whatever the method) is
placed by what it costs, the mean gzip size of its members' model files (and their
batch-1 latency where measured), against what it forgets, on four measures where
lower is better:

  top1_drop          dense mean top-1 minus the variant's (fraction; negative = gained)
  n_classes_hurt     classes significantly hurt (per_class/tstatistic_summary.csv)
  pie_fraction       share of eval images that are PIEs (pie/pie_summary.csv)
  excess_error_mean  excess error under corruption, mean over corruptions
                     (robustness/excess_error.csv)

The dense population forgets nothing by definition: 0 on a measure whose input
exists. A variant is on the Pareto front of a measure when no other variant is at
least as small and forgets at most as much, strictly better in one of the two; two
variants with equal size and equal forgetting do not dominate each other, so both
stay on the front. At the budget of each variant's size, the variant that forgets
least among those no larger is named (ties: the smaller, then the one first in
variant order); it is always on the front. A variant missing a size or a measure
is not placed: its front flag is empty and `not_measured` says why.

No TensorFlow here: numpy and pandas only (the report imports this module).
"""
import numpy as np
import pandas as pd

from pie.analysis import per_class, pie_labels, robustness
from pie.io import records
from pie.stages import cost as cost_stage


def _column(columns, name):
    """`name`, checked against a writer's column list: a renamed column fails on import,
    not as a silently empty frontier."""
    if name not in columns:
        raise ImportError(f"frontier: the writers no longer write a column {name!r}")
    return name


GZIP = _column(cost_stage.COST_COLUMNS, "gzip_bytes")
LATENCY = _column(cost_stage.COST_COLUMNS, "latency_ms_batch1")
TOP1 = _column(records.MANIFEST_COLUMNS, "top1")
CLASSES_HURT = _column(per_class.SUMMARY_COLUMNS, "n_classes_hurt")
BASELINE_TOP1 = _column(per_class.SUMMARY_COLUMNS, "baseline_mean_top1")
VARIANT_TOP1 = _column(per_class.SUMMARY_COLUMNS, "variant_mean_top1")
PIE_FRACTION = _column(pie_labels.SUMMARY_COLUMNS, "pie_fraction")
EXCESS = _column(robustness.EXCESS_ERROR_COLUMNS, "excess_error_mean")
TOP1_DROP = "top1_drop"

# The inputs, by name: the workdir file each comes from.
INPUTS = {
    "cost": "quantization/cost.csv",
    "class_tests": "per_class/tstatistic_summary.csv",
    "pies": "pie/pie_summary.csv",
    "excess": "robustness/excess_error.csv",
}
# Forgetting measures (lower = forgets less) and the input each comes from.
MEASURES = {TOP1_DROP: "population.csv", CLASSES_HURT: INPUTS["class_tests"],
            PIE_FRACTION: INPUTS["pies"], EXCESS: INPUTS["excess"]}
MEASURE_LABELS = {TOP1_DROP: "top-1 drop (points)", CLASSES_HURT: "classes hurt",
                  PIE_FRACTION: "PIEs %", EXCESS: "excess error under corruption (points)"}
DEFAULT_MEASURE = TOP1_DROP
COST_MEASURES = (GZIP, LATENCY)


def front_column(measure):
    return f"on_front_{measure}"


def budget_column(measure):
    return f"best_at_budget_{measure}"


FRONTIER_COLUMNS = (
    ["method", "sparsity", "variant", "members", GZIP, LATENCY, "top1_mean"]
    + list(MEASURES)
    + [column for measure in MEASURES
       for column in (front_column(measure), budget_column(measure))]
    + ["not_measured"])


# --------------------------------------------------------------------- the front


def dominated_by(cost, forgetting):
    """`matrix[u, v]`: variant u dominates v (at least as small, forgets at most as
    much, strictly better in one). Variants with a NaN are never compared."""
    cost = np.asarray(cost, dtype=float)
    forgetting = np.asarray(forgetting, dtype=float)
    if cost.shape != forgetting.shape or cost.ndim != 1:
        raise ValueError(f"cost and forgetting must be two vectors of one length, got "
                         f"shapes {cost.shape} and {forgetting.shape}")
    placed = np.isfinite(cost) & np.isfinite(forgetting)
    no_larger = cost[:, None] <= cost[None, :]
    no_worse = forgetting[:, None] <= forgetting[None, :]
    strictly = (cost[:, None] < cost[None, :]) | (forgetting[:, None] < forgetting[None, :])
    return no_larger & no_worse & strictly & placed[:, None] & placed[None, :]


def pareto_front(cost, forgetting):
    """(on_front, placed): boolean vectors; `placed` = both values are finite."""
    cost = np.asarray(cost, dtype=float)
    forgetting = np.asarray(forgetting, dtype=float)
    dominated = dominated_by(cost, forgetting).any(axis=0)
    placed = np.isfinite(cost) & np.isfinite(forgetting)
    return placed & ~dominated, placed


def best_within_budget(cost, forgetting, budgets):
    """For each budget, the index of the placed variant with cost <= budget that
    forgets least (ties: smaller cost, then lower index), or -1 when none fits."""
    cost = np.asarray(cost, dtype=float)
    forgetting = np.asarray(forgetting, dtype=float)
    budgets = np.asarray(budgets, dtype=float)
    placed = np.isfinite(cost) & np.isfinite(forgetting)
    # Rank every variant once by (forgetting, cost, index); the best in budget is the
    # fitting one of lowest rank.
    order = np.lexsort((np.arange(len(cost)), cost, forgetting))
    rank = np.empty(len(cost), dtype=float)
    rank[order] = np.arange(len(cost))
    fits = placed[None, :] & (cost[None, :] <= budgets[:, None])
    ranked = np.where(fits, rank[None, :], np.inf)
    best = ranked.argmin(axis=1) if len(cost) else np.zeros(len(budgets), dtype=int)
    return np.where(fits.any(axis=1), best, -1)


# ---------------------------------------------------------------------- the table


def _variants(manifest):
    """One row per variant of the manifest, dense first then by method and sparsity."""
    frame = manifest.assign(top1=pd.to_numeric(manifest[TOP1], errors="coerce"))
    table = frame.groupby(["method", "sparsity"], as_index=False).agg(
        members=("member_id", "size"), top1_mean=("top1", "mean"))
    table["variant"] = [records.variant_key(m, s)
                        for m, s in zip(table["method"], table["sparsity"])]
    table["_dense"] = table["method"] == records.DENSE_METHOD
    return table.sort_values(["_dense", "method", "sparsity"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def _per_variant(frame, value):
    """{variant key: value} from a per-variant table (method, sparsity, value)."""
    keys = [records.variant_key(m, s) for m, s in zip(frame["method"], frame["sparsity"])]
    return pd.Series(pd.to_numeric(frame[value], errors="coerce").to_numpy(), index=keys)


def _cost_means(cost, manifest):
    """Mean gzip bytes and batch-1 latency per variant, over the members that have one."""
    members = manifest[["member_id", "method", "sparsity"]]
    merged = cost.drop(columns=["method", "sparsity"], errors="ignore").merge(
        members, on="member_id", how="inner")
    merged["variant"] = [records.variant_key(m, s)
                         for m, s in zip(merged["method"], merged["sparsity"])]
    for column in COST_MEASURES:
        merged[column] = pd.to_numeric(merged[column], errors="coerce")
    return merged.groupby("variant")[list(COST_MEASURES)].mean()


def _excess_means(excess):
    """Per variant: excess error of the `mean_corruption` row, else the mean over the
    `<corruption>/<severity>` rows; natural shifts are left out."""
    names = excess["distribution"].astype(str)
    values = _per_variant(excess, EXCESS)
    stage_mean = values[(names == robustness.MEAN_CORRUPTION).to_numpy()]
    corruptions = values[robustness.is_corruption(names)]
    computed = corruptions.groupby(level=0).mean()
    chosen = stage_mean.groupby(level=0).mean()
    return pd.concat([chosen, computed[~computed.index.isin(chosen.index)]])


def frontier_table(manifest, cost=None, class_tests=None, pies=None, excess=None,
                   absent=None):
    """The frontier: one row per variant, columns `FRONTIER_COLUMNS`.

    Args:
      manifest: the population manifest (member_id, method, sparsity, top1).
      cost, class_tests, pies, excess: the tables of `INPUTS` (as their stages write
        them), or None when not measured.
      absent: {input name: why it is missing}, worded for the `not_measured` column
        (default: "<file> is missing").

    Returns:
      (table, reasons): `reasons` maps each value column that is NaN somewhere to
      why, and the rows' `not_measured` says the same per variant.
    """
    absent = dict(absent or {})
    given = {"cost": cost, "class_tests": class_tests, "pies": pies, "excess": excess}
    unknown = set(absent) - set(INPUTS)
    if unknown:
        raise ValueError(f"absent names unknown inputs {sorted(unknown)}; "
                         f"inputs: {sorted(INPUTS)}")
    why_absent = {name: absent.get(name, f"{INPUTS[name]} is missing")
                  for name, frame in given.items() if frame is None}
    table = _variants(manifest)
    keys = table["variant"]
    is_dense = table["_dense"].to_numpy()
    source = {}  # column -> input name (None: the manifest)

    if cost is not None:
        means = _cost_means(cost, manifest)
        for column in COST_MEASURES:
            table[column] = keys.map(means[column]).astype(float).to_numpy()
    else:
        for column in COST_MEASURES:
            table[column] = np.nan
    source.update({column: "cost" for column in COST_MEASURES})

    dense_top1 = table.loc[is_dense, "top1_mean"]
    dense_top1 = float(dense_top1.iloc[0]) if len(dense_top1) else np.nan
    table[TOP1_DROP] = dense_top1 - table["top1_mean"]
    if class_tests is not None:  # members without a top-1 in the manifest
        drop = (_per_variant(class_tests, BASELINE_TOP1)
                - _per_variant(class_tests, VARIANT_TOP1))
        fill = keys.map(drop.groupby(level=0).mean()).astype(float).to_numpy()
        table[TOP1_DROP] = table[TOP1_DROP].fillna(pd.Series(fill, index=table.index))
    source[TOP1_DROP] = None

    for column, name, values in (
            (CLASSES_HURT, "class_tests",
             None if class_tests is None else _per_variant(class_tests, CLASSES_HURT)),
            (PIE_FRACTION, "pies", None if pies is None else _per_variant(pies, PIE_FRACTION)),
            (EXCESS, "excess", None if excess is None else _excess_means(excess))):
        source[column] = name
        if values is None:
            table[column] = np.nan
            continue
        table[column] = keys.map(values.groupby(level=0).mean()).astype(float).to_numpy()
        table.loc[is_dense, column] = 0.0  # the dense population is the reference

    reasons, row_reasons = {}, [[] for _ in range(len(table))]
    for column, name in source.items():
        missing = table[column].isna().to_numpy()
        if not missing.any():
            continue
        if name in why_absent:
            why = why_absent[name]
        elif name is None:
            why = ("no dense member with a top-1 in population.csv" if not np.isfinite(
                dense_top1) else "no top-1 for the variant in population.csv")
        else:
            why = f"{INPUTS[name]} has no value for the variant"
        reasons[column] = why
        for row in np.flatnonzero(missing):
            row_reasons[row].append(f"{column}: {why}")
    table["not_measured"] = ["; ".join(r) for r in row_reasons]

    variants = keys.to_numpy()
    for measure in MEASURES:
        on_front, placed = pareto_front(table[GZIP], table[measure])
        table[front_column(measure)] = pd.array(
            np.where(placed, on_front, None).tolist(), dtype="boolean")
        best = best_within_budget(table[GZIP], table[measure], table[GZIP])
        table[budget_column(measure)] = np.where(best >= 0, variants[np.maximum(best, 0)], "")
    return table[FRONTIER_COLUMNS].reset_index(drop=True), reasons


def budget_table(table, measure=DEFAULT_MEASURE):
    """At each size budget (each distinct variant size, smallest first), the variant
    that forgets least on `measure` among those no larger: (budget, variant, value)."""
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r} is not one of {list(MEASURES)}")
    sizes = np.unique(table[GZIP].dropna().to_numpy(float))
    best = best_within_budget(table[GZIP], table[measure], sizes)
    rows = [(size, table["variant"].iloc[index], float(table[measure].iloc[index]))
            for size, index in zip(sizes, best) if index >= 0]
    return pd.DataFrame(rows, columns=["budget_bytes", "variant", measure])
