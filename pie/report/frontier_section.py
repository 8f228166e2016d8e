"""The report's frontier section (what each variant saves against what it forgets) and
the link to the PIE explorer.

Registers the sections `frontier` (after `cost`) and `pie_explorer` (after
`pie_grid`, its page is pie.report.explorer) in `sections.SECTIONS`; the table
itself is `pie.analysis.frontier.frontier_table`, and the report stage writes it to
`<out>/frontier.csv` (`write_frontier_csv`). The section needs the cost stage's sizes
(its headline): without `quantization/cost.csv` it says "not measured" and names
the command; the other forgetting measures are NaN with their reason when their
stage has not run.
"""
import matplotlib.ticker
import numpy as np
import pandas as pd

from pie.analysis import frontier
from pie.io import records
from pie.io.workdir import FILES
from pie.report import explorer, plots, sections

CSV_NAME = FILES["report_frontier"].name
# Values shown in the page: top-1 drop and PIE share as points / percent.
SCALE = {frontier.TOP1_DROP: 100.0, frontier.CLASSES_HURT: 1.0,
         frontier.PIE_FRACTION: 100.0, frontier.EXCESS: 1.0}
FORMAT = {frontier.TOP1_DROP: "{:+.2f}", frontier.CLASSES_HURT: "{:.0f}",
          frontier.PIE_FRACTION: "{:.1f}", frontier.EXCESS: "{:+.2f}"}


def frontier_from_context(context):
    """(table, reasons) of `frontier.frontier_table` from the report's inputs; a missing
    input is NaN with the command that makes it."""
    given, absent = {}, {}
    for name, relative in frontier.INPUTS.items():
        if context.exists(relative):
            given[name] = context.table(relative)
        else:
            absent[name] = f"{relative} is missing (run `{context.command(relative)}`)"
    return frontier.frontier_table(context.manifest, absent=absent, **given)


def write_frontier_csv(path, table):
    """Writes the frontier table (every column) to `path`; the report's stamp records it
    with the page."""
    records.write_csv(path, table, frontier.FRONTIER_COLUMNS, record=False)


def _scatter(table, measures, colors, labels):
    """One panel per measure: mean gzip size (log x) against forgetting, the front as a
    staircase, its variants ringed and named."""
    import matplotlib.pyplot as plt

    columns = min(2, len(measures))
    rows = -(-len(measures) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.9 * rows),
                                squeeze=False)
    for axis in axes.flat[len(measures):]:
        axis.set_visible(False)
    for axis, measure in zip(axes.flat, measures):
        placed = table[np.isfinite(table[frontier.GZIP]) & np.isfinite(table[measure])]
        x = placed[frontier.GZIP].to_numpy(float) / 1024.0
        y = placed[measure].to_numpy(float) * SCALE[measure]
        on_front = placed[frontier.front_column(measure)].fillna(False).to_numpy(bool)
        for method in dict.fromkeys(placed["method"]):
            mine = (placed["method"] == method).to_numpy()
            axis.scatter(x[mine], y[mine], s=30, color=colors.get(method, "grey"),
                         label=method, zorder=3)
        order = np.argsort(x[on_front], kind="stable")
        axis.step(x[on_front][order], y[on_front][order], where="post", color="#444444",
                  linewidth=1, zorder=2)
        axis.scatter(x[on_front], y[on_front], s=110, facecolors="none",
                     edgecolors="#222222", linewidths=1.2, zorder=4)
        for x_value, y_value, key in zip(x[on_front], y[on_front],
                                         placed["variant"][on_front]):
            axis.annotate(labels.get(key, key), (x_value, y_value), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        plots._finish(axis, "gzip KiB (mean, log scale)", frontier.MEASURE_LABELS[measure],
                      legend=axis is axes.flat[0])
    figure.tight_layout()
    return plots.to_png(figure)


def _flag(value):
    """A front flag: True, False or missing (NA: the variant is not placed)."""
    return not pd.isna(value) and bool(value)


def _cell(value, measure):
    return sections.number(value * SCALE[measure], FORMAT[measure])


@sections.section(
    "frontier", "Cost against forgetting: the frontier", "frontier",
    "Each point is a variant: its mean gzip size (what it saves) against what it forgets "
    "on one measure per panel (top-1 drop, classes hurt, PIE share, excess error under "
    "corruption; lower = forgets less). Ringed points joined by the staircase are the "
    "Pareto front: no other variant is as small and forgets as little. The second table "
    "names, at each size budget, the variant that forgets least.",
    inputs=(frontier.INPUTS["cost"],),
    optional=(frontier.INPUTS["class_tests"], frontier.INPUTS["pies"],
              frontier.INPUTS["excess"]))
def frontier_section(context):
    table, reasons = frontier_from_context(context)
    labels = dict(zip(context.variants["key"], context.variants["label"]))
    measures = [m for m in frontier.MEASURES if np.isfinite(table[m]).any()
                and np.isfinite(table[frontier.GZIP]).any()]
    blocks = []
    if measures:
        blocks.append(sections.figure(_scatter(table, measures, context.colors, labels),
                                      "gzip size against forgetting per variant"))
    else:
        blocks.append(context.warn("no variant has both a size and a forgetting measure: "
                                   + "; ".join(f"{c}: {w}" for c, w in reasons.items())))
    for column, why in reasons.items():
        if column in frontier.MEASURES or column == frontier.GZIP:
            blocks.append(sections.note(f"{frontier.MEASURE_LABELS.get(column, column)} not "
                                        f"measured for some variants: {why}."))
    ordered = table.sort_values([frontier.GZIP, "variant"], kind="stable", na_position="last")
    rows = []
    for row in ordered.to_dict("records"):
        fronts = [frontier.MEASURE_LABELS[m] for m in frontier.MEASURES
                  if _flag(row[frontier.front_column(m)])]
        rows.append([labels.get(row["variant"], row["variant"]),
                     sections.number(row[frontier.GZIP] / 1024.0, "{:.1f}"),
                     sections.number(row[frontier.LATENCY], "{:.3f}")]
                    + [_cell(row[m], m) for m in frontier.MEASURES]
                    + [", ".join(fronts) or sections.DASH])
    blocks.append(sections.table_block(
        ["variant", "gzip KiB (mean)", "latency ms, batch 1"]
        + [frontier.MEASURE_LABELS[m] for m in frontier.MEASURES] + ["on the front of"],
        rows, caption=f"Smallest first; {sections.DASH} = not measured. The same table, with "
                      f"the best variant at each budget per measure, is {CSV_NAME} beside "
                      "this page"))
    budgets = {m: frontier.budget_table(table, m) for m in measures}
    sizes = sorted({size for frame in budgets.values() for size in frame["budget_bytes"]})
    if sizes:
        best = {m: dict(zip(frame["budget_bytes"], frame["variant"]))
                for m, frame in budgets.items()}
        blocks.append(sections.table_block(
            ["size budget (gzip bytes)"] + [frontier.MEASURE_LABELS[m] for m in measures],
            [[f"{size:,.0f}"] + [labels.get(best[m].get(size), best[m].get(size))
                                         or sections.DASH for m in measures]
             for size in sizes],
            caption="At each budget (a variant's mean size), the variant no larger that "
                    "forgets least on each measure (ties: the smaller one)"))
    return blocks


@sections.section(
    "pie_explorer", "Browse every PIE", "PIE explorer",
    "The PIE explorer (pies.html, beside this page) lists every PIE of every variant by "
    "class, with the true label, the dense and compressed modal labels and their votes, "
    "ties, and what the compressed population mistakes each image for; this table counts "
    "them per variant.",
    inputs=(explorer.PIE_TABLE,), optional=("classes.json",))
def explorer_section(context):
    return [{"kind": "link", "href": explorer.PAGE_NAME,
             "text": "Open the PIE explorer (pies.html)"},
            sections.table_block(
                ["variant", "PIEs", "classes with PIEs",
                 "most confused pair (true → mistaken for, images)"],
                explorer.variant_rows(context),
                caption="Per variant: PIEs are images whose modal label in the variant "
                        "differs from the dense population's")]


def place_after(name, anchor):
    """Moves section `name` right after `anchor` in the registry (the page's order):
    sections registered here come after those of sections.py otherwise."""
    names = list(sections.SECTIONS)
    if anchor not in names or name not in names:
        return
    names.remove(name)
    names.insert(names.index(anchor) + 1, name)
    for key in names:
        sections.SECTIONS.move_to_end(key)


place_after("pie_explorer", "pie_grid")
place_after("frontier", "cost")
