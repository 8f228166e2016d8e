"""Figures of the report: each function takes a small frame and returns PNG bytes.

matplotlib runs on the Agg backend (no display); every figure is closed after
it is encoded, so building a report leaves no figure open.
"""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import matplotlib.ticker  # noqa: E402

# Class, group and method names come from the workdir: text, never mathtext (a name
# such as `$\x$` would otherwise be parsed, and fail).
matplotlib.rcParams["text.parse_math"] = False
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
HURT_COLOR = "#c0392b"
HELPED_COLOR = "#2471a3"
NOT_SIGNIFICANT_ALPHA = 0.35
DENSE_COLOR = "#222222"
REFERENCE_COLOR = "#555555"
# A fixed cycle, so a method has the same colour in every figure of one report.
METHOD_CYCLE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                "#a6761d", "#1f78b4", "#b15928", "#6a3d9a"]


def method_colors(methods):
    """{method: colour}, dense in black, the others in order of first appearance."""
    colors, others = {}, 0
    for method in methods:
        if method in colors:
            continue
        if method == "dense":
            colors[method] = DENSE_COLOR
        else:
            colors[method] = METHOD_CYCLE[others % len(METHOD_CYCLE)]
            others += 1
    return colors


def to_png(figure):
    """Encodes and closes `figure`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _finish(axis, xlabel, ylabel, legend=True):
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    if legend and axis.get_legend_handles_labels()[0]:
        axis.legend(frameon=False, fontsize="small")


def top1_against_sparsity(members, colors):
    """Mean top-1 per method against sparsity, the seed range shaded, seeds as dots.

    `members`: one row per member with `method`, `sparsity`, `top1`. The dense
    population is every method's starting point at sparsity 0. Methods with a
    single level (e.g. quantized) appear as points with min-max bars.
    """
    figure, axis = plt.subplots(figsize=(7, 4))
    stats = members.groupby(["method", "sparsity"])["top1"].agg(["mean", "min", "max"])
    dense = stats.loc["dense"] if "dense" in stats.index.get_level_values(0) else None
    single = [m for m in stats.index.get_level_values(0).unique()
              if m != "dense" and len(stats.loc[m]) == 1]
    for method in stats.index.get_level_values(0).unique():
        if method == "dense" or method in single:
            continue
        curve = stats.loc[method]
        if dense is not None and 0.0 not in curve.index:
            curve = pd.concat([dense, curve])
        curve = curve.sort_index()
        x = curve.index.to_numpy(float)
        axis.plot(x, 100 * curve["mean"], marker="o", color=colors[method], label=method)
        axis.fill_between(x, 100 * curve["min"], 100 * curve["max"], color=colors[method],
                          alpha=0.18, linewidth=0)
    for offset, method in enumerate(single, start=1):
        point = stats.loc[method].iloc[0]
        x = float(stats.loc[method].index[0]) + 0.012 * offset
        axis.errorbar([x], [100 * point["mean"]], fmt="s", color=colors[method],
                      yerr=[[100 * (point["mean"] - point["min"])],
                            [100 * (point["max"] - point["mean"])]], capsize=3, label=method)
    if dense is not None:
        axis.errorbar([0.0], [100 * dense["mean"].iloc[0]], fmt="o", color=DENSE_COLOR,
                      yerr=[[100 * (dense["mean"].iloc[0] - dense["min"].iloc[0])],
                            [100 * (dense["max"].iloc[0] - dense["mean"].iloc[0])]],
                      capsize=3, label="dense", zorder=3)
    axis.scatter(members["sparsity"].to_numpy(float), 100 * members["top1"].to_numpy(float),
                 s=9, color="black", alpha=0.45, zorder=4, label="one member")
    _finish(axis, "sparsity (fraction of weights removed)", "top-1 accuracy (%)")
    return to_png(figure)


def significant_classes(summary, colors):
    """Significantly hurt (solid) and helped (dashed) classes per method against sparsity."""
    figure, axis = plt.subplots(figsize=(7, 3.6))
    for method, rows in summary.groupby("method", sort=False):
        rows = rows.sort_values("sparsity")
        x = rows["sparsity"].to_numpy(float)
        marker = "o" if len(rows) > 1 else "s"
        axis.plot(x, rows["n_classes_hurt"], marker=marker, color=colors[method],
                  label=f"{method}: hurt")
        axis.plot(x, rows["n_classes_helped"], marker=marker, linestyle="--",
                  markerfacecolor="white", color=colors[method], label=f"{method}: helped")
    axis.yaxis.get_major_locator().set_params(integer=True)
    most = max(summary["n_classes_hurt"].max(), summary["n_classes_helped"].max(), 1)
    axis.set_ylim(0, 1.15 * most)
    _finish(axis, "sparsity", "significant classes")
    return to_png(figure)


def class_deltas(deltas, title, max_labels=40):
    """Bars of normalised delta per class, sorted; colour = direction, pale = not significant.

    `deltas`: `class_name`, `normalized_delta`, `significant`.
    """
    rows = deltas.sort_values("normalized_delta", kind="stable")
    values = 100 * rows["normalized_delta"].to_numpy(float)
    significant = rows["significant"].to_numpy(bool)
    colors = np.where(values < 0, HURT_COLOR, HELPED_COLOR)
    alphas = np.where(significant, 1.0, NOT_SIGNIFICANT_ALPHA)
    width = min(max(6.0, 0.22 * len(rows) + 2), 14)
    figure, axis = plt.subplots(figsize=(width, 3.8))
    positions = np.arange(len(rows))
    bars = axis.bar(positions, values, color=colors)
    for bar, alpha in zip(bars, alphas):
        bar.set_alpha(alpha)
    axis.axhline(0, color="black", linewidth=0.8)
    if len(rows) <= max_labels:
        axis.set_xticks(positions)
        axis.set_xticklabels(rows["class_name"].astype(str), rotation=90, fontsize="small")
    else:
        axis.set_xticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=HURT_COLOR),
               plt.Rectangle((0, 0), 1, 1, color=HELPED_COLOR),
               plt.Rectangle((0, 0), 1, 1, color="grey", alpha=NOT_SIGNIFICANT_ALPHA)]
    axis.legend(handles, ["hurt (significant)", "helped: lost less than average (significant)",
                    "not significant"],
                frameon=False, fontsize="small")
    axis.set_title(title, fontsize="medium")
    _finish(axis, "class (sorted by change)", "normalised delta (points)", legend=False)
    return to_png(figure)


def group_changes(groups, title):
    """Horizontal bars of `change` (fraction; positive = the group's error grew more than
    the overall error, red) per `label`, pale when not `significant`. The sign is the
    table's: a +0.56 row is a bar at +0.56."""
    rows = groups.sort_values("change", ascending=False, kind="stable")
    values = 100 * rows["change"].to_numpy(float)
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.3))
    positions = np.arange(len(rows))[::-1]
    bars = axis.barh(positions, values, color=np.where(values > 0, HURT_COLOR, HELPED_COLOR))
    for bar, significant in zip(bars, rows["significant"].to_numpy(bool)):
        bar.set_alpha(1.0 if significant else NOT_SIGNIFICANT_ALPHA)
    axis.set_yticks(positions)
    axis.set_yticklabels(rows["label"].astype(str), fontsize="small")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_title(title, fontsize="medium")
    _finish(axis, "error change beyond the overall change (points; right = the group pays "
            "more)", "", legend=False)
    return to_png(figure)


def heatmap(matrix, row_labels, column_labels, value_label, cmap="viridis", center=None,
            fmt="{:.0f}"):
    """A labelled heatmap with the values written in the cells (when they fit)."""
    matrix = np.asarray(matrix, float)
    rows, columns = matrix.shape
    figure, axis = plt.subplots(figsize=(min(max(5.0, 0.55 * columns + 3), 16),
                                         max(2.2, 0.42 * rows + 1.4)))
    finite = matrix[np.isfinite(matrix)]
    kwargs = {}
    if center is not None and finite.size:
        bound = max(float(np.abs(finite - center).max()), 1e-9)
        kwargs = {"vmin": center - bound, "vmax": center + bound}
    image = axis.imshow(np.ma.masked_invalid(matrix), cmap=cmap, aspect="auto", **kwargs)
    axis.set_xticks(np.arange(columns))
    axis.set_xticklabels(column_labels, rotation=45, ha="right", fontsize="small")
    axis.set_yticks(np.arange(rows))
    axis.set_yticklabels(row_labels, fontsize="small")
    if rows * columns <= 400 and finite.size:
        middle = (np.nanmax(matrix) + np.nanmin(matrix)) / 2 if center is None else center
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                dark = value < middle if center is None else abs(value - center) > 0.5 * (
                    kwargs["vmax"] - center)
                axis.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                          color="white" if dark else "black")
    figure.colorbar(image, ax=axis, label=value_label, fraction=0.04, pad=0.02)
    return to_png(figure)


def noise_similarity(curves, reference, colors):
    """Agreement and softmax L2 distance with the dense model against noise level.

    `curves`: `label`, `method`, `eps`, `agreement`, `l2` (one line per label);
    `reference`: `eps`, `agreement`, `l2` of a second dense model, or None.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    styles = ["-", "--", ":", "-."]
    seen = {}
    for label, rows in curves.groupby("label", sort=False):
        rows = rows.sort_values("eps")
        method = rows["method"].iloc[0]
        style = styles[seen.setdefault(method, 0) % len(styles)]
        seen[method] += 1
        for axis, column in zip(axes, ("agreement", "l2")):
            scale = 100 if column == "agreement" else 1
            axis.plot(rows["eps"], scale * rows[column], marker="o", markersize=3,
                      linestyle=style, color=colors.get(method, "grey"), label=label)
    if reference is not None and len(reference):
        reference = reference.sort_values("eps")
        for axis, column in zip(axes, ("agreement", "l2")):
            scale = 100 if column == "agreement" else 1
            axis.plot(reference["eps"], scale * reference[column], color=REFERENCE_COLOR,
                      linewidth=2.5, alpha=0.6, label="another dense model (reference)")
    _finish(axes[0], "noise level eps (uniform, normalised input units)",
            "same label as dense (%)")
    _finish(axes[1], "noise level eps", "L2 distance of softmax outputs", legend=False)
    return to_png(figure)


def overlap_bars(variants, reference, colors):
    """Horizontal bars of `iou_mean` (± `iou_std`) per `label`; a line at `reference`."""
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(variants) + 1.2))
    positions = np.arange(len(variants))[::-1]
    axis.barh(positions, variants["iou_mean"], xerr=variants["iou_std"].fillna(0.0),
              color=[colors.get(m, "grey") for m in variants["method"]], capsize=3)
    axis.set_yticks(positions)
    axis.set_yticklabels(variants["label"])
    if reference is not None and np.isfinite(reference):
        axis.axvline(reference, color=REFERENCE_COLOR, linewidth=2.5, alpha=0.6,
                     label="two dense models (reference)")
    axis.set_xlim(0, 1)
    _finish(axis, "overlap of the top features with the dense model (IoU)", "", legend=False)
    if reference is not None and np.isfinite(reference):
        axis.legend(frameon=False, fontsize="small", loc="upper left",
                    bbox_to_anchor=(0.0, -0.35 if len(variants) < 4 else -0.15))
    return to_png(figure)


def cost_against_accuracy(members, colors):
    """Gzip size of each member's model file against its top-1, coloured by method."""
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for method, rows in members.groupby("method", sort=False):
        axis.scatter(rows["gzip_bytes"] / 1024.0, 100 * rows["top1"], s=28,
                     color=colors.get(method, "grey"), label=method, alpha=0.85)
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _finish(axis, "gzip-compressed model file (KiB, log scale)", "top-1 accuracy (%)")
    return to_png(figure)


def image_png(image, min_side=96, max_side=160):
    """A uint8 HxW or HxWxC image as PNG bytes: small images enlarged by an integer
    factor (nearest neighbour: the pixels the model saw), large ones shrunk to a
    thumbnail so that a page of ImageNet images stays small."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    factor = max(1, int(np.ceil(min_side / max(1, min(array.shape[:2])))))
    if factor > 1:
        array = np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)
    picture = Image.fromarray(array)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_prune_potential(table, colors):
    """Noise prune potential per method against eps: the mean over draws, ± MAD shaded.

    `table`: `method`, `eps`, `noise_prune_potential_mean`, `noise_prune_potential_mad`.
    """
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for method, rows in table.groupby("method", sort=False):
        rows = rows.sort_values("eps")
        mean = 100 * rows["noise_prune_potential_mean"].to_numpy(float)
        mad = 100 * rows["noise_prune_potential_mad"].fillna(0.0).to_numpy(float)
        color = colors.get(method, "grey")
        axis.plot(rows["eps"], mean, marker="o", markersize=3, color=color, label=method)
        axis.fill_between(rows["eps"], mean - mad, mean + mad, color=color, alpha=0.2,
                          linewidth=0)
    axis.set_ylim(0, 102)  # a share of the weights or units: 0..100%
    _finish(axis, "noise level eps (uniform, normalised input units)",
            "prune potential (% removed)")
    return to_png(figure)


def excess_error_fit(points, fits, colors):
    """Per-seed excess error against sparsity, with each method's line through the
    origin and its 95% band (seeds as clusters).

    `points`: `method`, `sparsity`, `excess_error`; `fits`: `method`, `slope`,
    `slope_ci_low`, `slope_ci_high` (one row per method).
    """
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for method, rows in points.groupby("method", sort=False):
        color = colors.get(method, "grey")
        axis.scatter(100 * rows["sparsity"], rows["excess_error"], s=22, color=color,
                     alpha=0.7)
        fit = fits[fits["method"] == method]
        if fit.empty:
            continue
        fit = fit.iloc[0]
        x = np.linspace(0.0, float(rows["sparsity"].max()), 50)
        axis.plot(100 * x, fit["slope"] * x, color=color,
                  label=f"{method}: {fit['slope']:+.2f} points per unit sparsity")
        if np.isfinite(fit["slope_ci_low"]) and np.isfinite(fit["slope_ci_high"]):
            axis.fill_between(100 * x, fit["slope_ci_low"] * x, fit["slope_ci_high"] * x,
                              color=color, alpha=0.18, linewidth=0)
    axis.axhline(0.0, color=REFERENCE_COLOR, linewidth=1, alpha=0.6)
    _finish(axis, "prune ratio (% of weights or units removed)", "excess error (points)")
    return to_png(figure)
