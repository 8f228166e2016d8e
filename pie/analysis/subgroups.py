"""Who pays for compression: error, false positive/negative and PIE rates per subgroup.

An eval image may carry attributes (CelebA's `Male`, `Young`, or any column of a
groups CSV keyed by `image_id`). For every compressed variant, attribute and
attribute value (a *group*), this module compares the dense population with the
variant (Hooker et al.'s CelebA study):

  error, fpr, fnr     mean over a population's members of each member's rate on the
                      group's images (every member sees every image, so this is also
                      the pooled rate); fpr/fnr only for binary tasks (class 1 is the
                      positive class), NaN otherwise or when the group has no
                      negatives/positives
  *_change_vs_overall (variant_g - dense_g) - (variant_all - dense_all): how much more
                      the group's rate moved than the rate over all images
  pie_rate            share of the group's images that are PIEs of the variant
  t_statistic, p_value  the test (`--test`: Welch's two-sided t-test by default, a
                      paired t-test by seed, or a permutation test) between the variant's
                      and the dense members of (member's group error - member's overall
                      error); NaN when those values do not vary
  effect_*            the same difference in points, with the 95% interval that
                      inverts the test (Welch / paired t interval; none for permutation)
  p_value_bh, significant, direction
                      the multiple-testing rule (`--correction`, Benjamini-Hochberg over
                      the groups of each variant by default) and the decision; a group
                      on which both populations together make fewer than `min_errors`
                      errors is `ceiling`: not tested, never significant

Attributes are joined to predictions by `image_id` with one vectorised merge.
"""
import os
import warnings

import numpy as np
import pandas as pd

from pie.analysis import per_class, stats
from pie.io import cli, records
from pie.io.workdir import PER_CLASS_DIR, Workdir

IMAGE_ID = "image_id"
STAGE_DIR = PER_CLASS_DIR
RATES = ("error", "fpr", "fnr")
SUBGROUP_COLUMNS = [
    "method", "sparsity", "attribute", "group", "n_images", "share", "n_dense", "n_variant",
    "dense_error", "variant_error", "dense_error_all", "variant_error_all",
    "error_change_vs_overall",
    "dense_fpr", "variant_fpr", "dense_fpr_all", "variant_fpr_all", "fpr_change_vs_overall",
    "dense_fnr", "variant_fnr", "dense_fnr_all", "variant_fnr_all", "fnr_change_vs_overall",
    "pie_rate", "pie_rate_all", "pie_share", "test", "effect_points", "effect_ci_low_points",
    "effect_ci_high_points", "effect_ci_method", "n_errors", "t_statistic", "p_value",
    "correction", "p_value_bh", "significant", "significant_uncorrected", "direction",
]
ALPHA = 0.05


class SubgroupError(cli.UsageError):
    """Group attributes that cannot be used as asked (bad input: exit 2)."""


# --------------------------------------------------------------------------- groups


def read_groups_csv(path):
    """A groups file: `image_id` plus one column per attribute, one row per image."""
    if not os.path.exists(path):
        raise SubgroupError(f"no groups file at {path}")
    groups = records.read_csv(path)
    if IMAGE_ID not in groups.columns:
        raise SubgroupError(f"groups file {path} has no '{IMAGE_ID}' column; it needs "
                            f"'{IMAGE_ID}' and one column per attribute")
    if len(groups.columns) < 2:
        raise SubgroupError(f"groups file {path} has no attribute columns besides "
                            f"'{IMAGE_ID}'")
    ids = pd.to_numeric(groups[IMAGE_ID], errors="coerce")
    if ids.isna().any() or not np.all(ids == np.round(ids)):
        raise SubgroupError(f"groups file {path}: '{IMAGE_ID}' must hold integers")
    groups[IMAGE_ID] = ids.astype(np.int64)
    duplicated = groups[IMAGE_ID].duplicated()
    if duplicated.any():
        raise SubgroupError(f"groups file {path}: image_id "
                            f"{int(groups.loc[duplicated, IMAGE_ID].iloc[0])} appears twice")
    return groups


def select_attributes(groups, names, origin):
    """`image_id` and the named attribute columns (all of them when `names` is empty)."""
    available = [c for c in groups.columns if c != IMAGE_ID]
    names = list(names) or available
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SubgroupError(f"unknown group attribute {', '.join(unknown)}; {origin} has: "
                            f"{', '.join(available)}")
    return groups[[IMAGE_ID] + names]


def groups_from_attributes(table):
    """A groups frame from `DataSource.attributes()` (dict of arrays with image_id)."""
    return pd.DataFrame({name: np.asarray(values) for name, values in table.items()})


def long_groups(groups):
    """(image_id, attribute, group) rows; empty cells belong to no group.

    Group values are kept as text so that one column can hold every attribute's
    values; whole-number floats (integers read next to empty cells) print as integers.
    """
    frames = []
    for name in (c for c in groups.columns if c != IMAGE_ID):
        values = groups[name]
        present = values.notna().to_numpy()
        values = values[present]
        if pd.api.types.is_float_dtype(values) and np.all(values == np.round(values)):
            values = values.astype(np.int64)
        frames.append(pd.DataFrame({IMAGE_ID: groups[IMAGE_ID].to_numpy()[present],
                                    "attribute": name, "group": values.astype(str).to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def check_coverage(groups, image_ids, origin):
    """Every eval image must have a row: a silent gap would bias every rate."""
    missing = ~np.isin(np.unique(image_ids), groups[IMAGE_ID].to_numpy())
    if missing.any():
        first = int(np.unique(image_ids)[missing][0])
        raise SubgroupError(f"{origin} has no row for {int(missing.sum())} of the "
                            f"{len(missing)} eval images (e.g. image_id {first}); it needs "
                            "one row per eval image (empty cells: image in no group)")


# -------------------------------------------------------------------------- metrics


def _outcomes(frame, binary):
    """Per-row indicator columns that the group sums turn into rates."""
    label = frame["label"].to_numpy()
    predicted = frame["predicted"].to_numpy()
    out = {"n": np.ones(len(frame), np.int64), "wrong": (label != predicted).astype(np.int64)}
    if binary:
        out.update(negatives=(label == 0).astype(np.int64),
                   positives=(label == 1).astype(np.int64),
                   false_pos=((label == 0) & (predicted == 1)).astype(np.int64),
                   false_neg=((label == 1) & (predicted == 0)).astype(np.int64))
    return pd.DataFrame(out)


def _rates(counts, binary):
    rates = pd.DataFrame(index=counts.index)
    rates["error"] = stats.safe_ratio(counts["wrong"], counts["n"])
    rates["fpr"] = (stats.safe_ratio(counts["false_pos"], counts["negatives"]) if binary
                    else np.nan)
    rates["fnr"] = (stats.safe_ratio(counts["false_neg"], counts["positives"]) if binary
                    else np.nan)
    return rates


def member_rates(predictions, groups_long, binary):
    """Per member: rates on each (attribute, group) and over all its images.

    `predictions` has `member`, `image_id`, `label`, `predicted`.
    Returns (group_rates indexed by member, attribute, group; overall rates indexed
    by member).
    """
    base = predictions[["member", IMAGE_ID, "label", "predicted"]].reset_index(drop=True)
    outcomes = pd.concat([base[["member"]], _outcomes(base, binary)], axis=1)
    overall = _rates(outcomes.groupby("member").sum(), binary)
    joined = base.merge(groups_long, on=IMAGE_ID, how="inner")
    grouped = pd.concat([joined[["member", "attribute", "group"]],
                         _outcomes(joined, binary)], axis=1)
    counts = grouped.groupby(["member", "attribute", "group"], sort=True).sum()
    return _rates(counts, binary), overall


def group_sizes(groups_long, image_ids):
    """Images per (attribute, group), and their share of all eval images."""
    evaluated = groups_long[groups_long[IMAGE_ID].isin(np.unique(image_ids))]
    sizes = evaluated.groupby(["attribute", "group"], sort=True).size().rename("n_images")
    return sizes.to_frame().assign(share=sizes / len(np.unique(image_ids)))


def pie_rates(pie, groups_long):
    """Per variant and group: PIE rate, overall PIE rate, share of the variant's PIEs.

    `pie` is `W/pie/pie.csv` (method, sparsity, image_id, is_pie).
    """
    pie = pie[["method", "sparsity", IMAGE_ID, "is_pie"]].copy()
    pie["is_pie"] = pie["is_pie"].astype(str).str.lower().isin(("true", "1")).astype(np.int64)
    keys = ["method", "sparsity"]
    overall = pie.groupby(keys)["is_pie"].agg(["mean", "sum"]).rename(
        columns={"mean": "pie_rate_all", "sum": "n_pie_all"})
    joined = pie.merge(groups_long, on=IMAGE_ID, how="inner")
    per_group = joined.groupby(keys + ["attribute", "group"])["is_pie"].agg(["mean", "sum"])
    per_group = per_group.rename(columns={"mean": "pie_rate", "sum": "n_pie"}).reset_index()
    per_group = per_group.merge(overall.reset_index(), on=keys, how="left")
    per_group["pie_share"] = stats.safe_ratio(per_group["n_pie"], per_group["n_pie_all"])
    return per_group[keys + ["attribute", "group", "pie_rate", "pie_rate_all", "pie_share"]]


def subgroup_table(predictions, manifest, groups, binary, pie=None, test="welch",
                   resamples=stats.DEFAULT_RESAMPLES, seed=0,
                   correction=stats.DEFAULT_CORRECTION, min_errors=None):
    """The subgroups table: one row per variant x attribute x group.

    Args:
      predictions: `member` (row index in `manifest`), `image_id`, `label`, `predicted`.
      manifest: the population manifest (method, sparsity, seed per member row).
      groups: `image_id` plus one column per attribute.
      binary: two-class task; false positive/negative rates are computed.
      pie: `W/pie/pie.csv` as a frame, or None (PIE columns NaN).
      test: 'welch', 'paired' (each variant member with the dense member of its seed;
        UsageError when one has none) or 'permutation'.
      resamples, seed: permutation (Monte-Carlo) draws.
      correction: 'bh' (per variant, the default), 'none' or 'bh_all' (the table).
      min_errors: groups with fewer errors (both populations) are `ceiling`; None:
        the members of the smaller population.
    """
    if test not in stats.TESTS:
        raise SubgroupError(f"test {test!r} is not allowed: use one of {list(stats.TESTS)}")
    per_class.validate_test_options(ALPHA, correction, test, resamples, min_errors, seed)
    groups_long = long_groups(groups)
    group_rates, overall = member_rates(predictions, groups_long, binary)
    sizes = group_sizes(groups_long, predictions[IMAGE_ID].to_numpy())
    keys = sizes.index  # (attribute, group), sorted
    methods = manifest["method"].to_numpy()
    sparsities = manifest["sparsity"].astype(float).to_numpy()
    dense = np.flatnonzero(methods == records.DENSE_METHOD)
    # Members x groups matrices, one per rate (a member without images in a group: NaN).
    matrices = {rate: group_rates[rate].unstack(["attribute", "group"]).reindex(
        index=np.arange(len(manifest)), columns=keys).to_numpy() for rate in RATES}
    overall = overall.reindex(np.arange(len(manifest)))
    variants = manifest.loc[methods != records.DENSE_METHOD, ["method", "sparsity"]]
    variants = variants.drop_duplicates().sort_values(["method", "sparsity"])
    frames = []
    for method, sparsity in variants.itertuples(index=False):
        members = np.flatnonzero((methods == method) & (sparsities == float(sparsity)))
        frame = pd.DataFrame({"method": method, "sparsity": float(sparsity),
                              "attribute": keys.get_level_values(0),
                              "group": keys.get_level_values(1),
                              "n_images": sizes["n_images"].to_numpy(),
                              "share": sizes["share"].to_numpy(),
                              "n_dense": len(dense), "n_variant": len(members)})
        for rate in RATES:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN
                dense_group = np.nanmean(matrices[rate][dense], axis=0)
                variant_group = np.nanmean(matrices[rate][members], axis=0)
            dense_all = overall[rate].to_numpy()[dense].mean()
            variant_all = overall[rate].to_numpy()[members].mean()
            frame[f"dense_{rate}"] = dense_group
            frame[f"variant_{rate}"] = variant_group
            frame[f"dense_{rate}_all"] = dense_all
            frame[f"variant_{rate}_all"] = variant_all
            frame[f"{rate}_change_vs_overall"] = (
                (variant_group - dense_group) - (variant_all - dense_all))
        normalized = matrices["error"] - overall["error"].to_numpy()[:, None]
        variant_rows, dense_rows = members, dense
        if test == "paired":
            variant_rows, dense_rows = per_class.pair_by_seed(
                manifest, (methods == method) & (sparsities == float(sparsity)),
                methods == records.DENSE_METHOD, records.variant_key(method, sparsity))
        variant, baseline = normalized[variant_rows], normalized[dense_rows]
        frame["test"] = test
        t_statistic, p_value, flat = stats.compare(variant, baseline, test, resamples, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a group without images
            frame["effect_points"] = 100 * (np.nanmean(variant, axis=0)
                                            - np.nanmean(baseline, axis=0))
        low, high = stats.interval_of_test(variant, baseline, test)
        # Every member sees every image, so errors = error rate x the group's images.
        wrong = np.rint(np.nan_to_num(matrices["error"]) * sizes["n_images"].to_numpy())
        n_errors = (wrong[variant_rows].sum(axis=0)
                    + wrong[np.unique(dense_rows)].sum(axis=0)).astype(np.int64)
        ceiling = n_errors < per_class.ceiling_threshold(
            min_errors, len(variant_rows), len(np.unique(dense_rows)))
        for values in (t_statistic, p_value, low, high):
            values[ceiling] = np.nan
        frame["t_statistic"], frame["p_value"] = t_statistic, p_value
        frame["effect_ci_low_points"], frame["effect_ci_high_points"] = 100 * low, 100 * high
        frame["effect_ci_method"] = stats.INTERVAL_METHODS[test]
        frame["n_errors"] = n_errors
        frame["_flat"], frame["_ceiling"] = flat, ceiling
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=SUBGROUP_COLUMNS)
    table = decide(pd.concat(frames, ignore_index=True), correction)
    if pie is not None:
        rates = pie_rates(pie, groups_long)
        rates["sparsity"] = rates["sparsity"].astype(float)
        table = table.merge(rates, on=["method", "sparsity", "attribute", "group"], how="left")
    else:
        table = table.assign(pie_rate=np.nan, pie_rate_all=np.nan, pie_share=np.nan)
    return table[SUBGROUP_COLUMNS]


def decide(table, correction=stats.DEFAULT_CORRECTION, alpha=ALPHA):
    """p_value_bh, significant (under `correction`), significant_uncorrected and
    direction: `ceiling`, `no_variance`, then the sign of effect_points (`hurt` =
    the group's error grew more than the overall error)."""
    keys = ["method", "sparsity"]
    if correction == "bh_all":
        table["p_value_bh"] = stats.benjamini_hochberg(table["p_value"].to_numpy())
    else:
        table["p_value_bh"] = table.groupby(keys, sort=False)["p_value"].transform(
            lambda p: stats.benjamini_hochberg(p.to_numpy()))
    table["correction"] = correction
    tested = table["p_value_bh" if correction != "none" else "p_value"]
    table["significant"] = (tested <= alpha).to_numpy()
    table["significant_uncorrected"] = (table["p_value"] <= alpha).to_numpy()
    effect = table["effect_points"].to_numpy(np.float64)
    table["direction"] = np.select(
        [np.isnan(effect), table["_ceiling"].to_numpy(bool), table["_flat"].to_numpy(bool),
         effect > 0, effect < 0, effect == 0],
        ["undefined", per_class.CEILING, per_class.NO_SPREAD, "hurt", "helped", "unchanged"],
        "undefined")
    return table.drop(columns=["_flat", "_ceiling"])


# ------------------------------------------------------------------------ the stage


def subgroups_path(workdir, distribution=records.CLEAN):
    return Workdir(workdir).file("subgroups", distribution)


def pie_path(workdir, distribution=records.CLEAN):
    return Workdir(workdir).file("pie", distribution)


def load_groups(workdir, groups_csv=None, attributes=(), data_dir=None):
    """The groups frame of a workdir: from a CSV, or the dataset's own attributes."""
    if groups_csv:
        return select_attributes(read_groups_csv(groups_csv), attributes,
                                 f"groups file {groups_csv}")
    if not attributes:
        raise SubgroupError("pass --groups_csv=<file> or --group_attributes=<names> "
                            "(the dataset's own per-image attributes, e.g. celeb_a's Male)")
    from pie.data import sources
    source = sources.load_for_workdir(workdir, data_dir=data_dir, group_attributes=attributes)
    if source.attributes is None:
        raise SubgroupError(f"dataset '{source.name}' has no per-image attributes: pass "
                            "--groups_csv=<file> with image_id and one column per attribute")
    return groups_from_attributes(source.attributes())


def read_pie(workdir, distribution=records.CLEAN):
    """`W/pie/pie.csv`, or None with a warning: PIE columns are then NaN."""
    path = pie_path(workdir, distribution)
    if not os.path.exists(path):
        print(f"warning: no {path}: the PIE columns are empty (NaN); run "
              "pie_dataset_gen.aggregate_predictions first to fill them", flush=True)
        return None
    return records.read_csv(path, ["method", "sparsity", IMAGE_ID, "is_pie"])


def missing_pie_variants(table):
    """Variants without PIE rows (pie.csv older than the manifest)."""
    if table.empty:
        return []
    present = table.groupby(["method", "sparsity"])["pie_rate_all"].count()
    return [records.variant_key(method, sparsity)
            for method, sparsity in present[present == 0].index]
