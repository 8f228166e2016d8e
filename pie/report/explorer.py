"""The PIE explorer: one self-contained page to browse every variant's PIEs by class.

`W/report/pies.html`, written by the report stage beside `index.html`: no server, no
network (a Content-Security-Policy forbids fetching anything), the script and CSS
inline, the data embedded as JSON in a `<script type="application/json">` element.
Class names and other strings come from the (untrusted) workdir: the JSON is
escaped so that no text can close the script element (`<`, `>`, `&`, U+2028 and
U+2029 as `\\uXXXX`), and the page's script writes every value with `textContent`,
never as markup.

Per PIE it shows the eval image's id (and its file name when `pie.csv` has a
`filename` column), the true label, the dense and the variant modal labels with
their votes (`agreement` x `n` members), whether a tie decided each (`*_tied`; from
the votes when the column is absent: a modal label with more than half the votes
cannot be tied, otherwise unknown) and the class the variant mistakes it for. A
per-class count table links into each variant's classes; the most confused class
pairs (true class -> variant modal label) are listed per variant.
"""
import collections
import json

import numpy as np
import pandas as pd

from pie.analysis import pie_labels
from pie.io import records

PAGE_NAME = "pies.html"
PIE_TABLE = "pie/pie.csv"
FILENAME_COLUMNS = ("filename", "file_name")  # shown when pie.csv has one
MAX_EMBEDDED_PIES = 100_000  # a bigger table is cut per variant, with a note
TOP_CONFUSED = 10
# The pie.csv columns the explorer reads (checked against the writer's list).
READ_COLUMNS = ["method", "sparsity", "image_id", "label", "baseline_modal_label",
                "variant_modal_label", "baseline_n", "variant_n", "baseline_agreement",
                "variant_agreement", "is_pie"]
TIE_COLUMNS = ["baseline_tied", "variant_tied"]
for _name in READ_COLUMNS + TIE_COLUMNS:
    if _name not in pie_labels.PIE_COLUMNS:
        raise ImportError(f"explorer: pie.csv is no longer written with {_name!r}")

# JSON text safe inside a <script> element: none of these can end it or start markup.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                   "\u2029": "\\u2029"}


def script_json(data):
    """`data` as JSON that can sit inside `<script type="application/json">`."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in _SCRIPT_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def _votes(agreement, members):
    """Members voting for the modal label: agreement x members, rounded."""
    return np.rint(pd.to_numeric(agreement, errors="coerce").to_numpy(float)
                   * pd.to_numeric(members, errors="coerce").to_numpy(float))


def _tied(rows, prefix, votes):
    """1 / 0 per row from the `<prefix>_tied` column, else from the votes: a modal label
    with more than half the votes is not tied, otherwise unknown (None)."""
    column = f"{prefix}_tied"
    if column in rows.columns:
        return _truthy(rows[column]).astype(int).tolist()
    members = pd.to_numeric(rows[f"{prefix}_n"], errors="coerce").to_numpy(float)
    return [0 if v * 2 > n else None for v, n in zip(votes, members)]


def _ints(values):
    return [None if not np.isfinite(v) else int(v) for v in np.asarray(values, float)]


def _truthy(values):
    """A flag column as booleans (a Series with the same index): bools as they are, text
    `True` / `1` as written to CSV."""
    if values.dtype == bool:
        return values
    return values.astype(str).str.lower().isin(["true", "1", "1.0"])


def _filename_column(table):
    return next((c for c in FILENAME_COLUMNS if c in table.columns), None)


def explorer_data(pie_table, class_names, variants):
    """The page's data: classes, and per variant its PIEs (columnar) and most confused
    class pairs. `variants`: the report's variant table (key, label), for order and
    names; a variant of pie.csv missing from it is shown under its key."""
    # One group per variant (no per-row key: pie.csv has a row per variant x image).
    is_pie = _truthy(pie_table["is_pie"]).to_numpy(bool)
    groups = {records.variant_key(method, sparsity): positions for (method, sparsity),
              positions in pie_table.groupby(["method", "sparsity"], sort=False).indices.items()}
    labels = dict(zip(variants["key"], variants["label"]))
    order = {key: i for i, key in enumerate(variants["key"])}
    keys = sorted(groups, key=lambda k: (order.get(k, len(order)), k))
    total = int(is_pie.sum())
    cap = None if total <= MAX_EMBEDDED_PIES else max(1, MAX_EMBEDDED_PIES // max(1, len(keys)))
    filename = _filename_column(pie_table)
    out = []
    for key in keys:
        in_variant = groups[key]
        rows = pie_table.iloc[in_variant[is_pie[in_variant]]].sort_values(
            ["label", "image_id"], kind="stable")
        n_pie = len(rows)
        if cap is not None:
            rows = rows.head(cap)
        dense_votes = _votes(rows["baseline_agreement"], rows["baseline_n"])
        variant_votes = _votes(rows["variant_agreement"], rows["variant_n"])
        label = rows["label"].astype(int).to_numpy()
        mistaken = rows["variant_modal_label"].astype(int).to_numpy()
        pairs = collections.Counter(zip(label[mistaken != label].tolist(),
                                        mistaken[mistaken != label].tolist()))
        pies = {
            "image_id": rows["image_id"].astype(int).tolist(),
            "label": label.tolist(),
            "dense": rows["baseline_modal_label"].astype(int).tolist(),
            "dense_votes": _ints(dense_votes),
            "dense_n": _ints(rows["baseline_n"]),
            "dense_tied": _tied(rows, "baseline", dense_votes),
            "variant": mistaken.tolist(),
            "variant_votes": _ints(variant_votes),
            "variant_n": _ints(rows["variant_n"]),
            "variant_tied": _tied(rows, "variant", variant_votes),
        }
        if filename:
            pies["filename"] = ["" if pd.isna(v) else str(v) for v in rows[filename]]
        out.append({
            "key": key, "label": labels.get(key, key), "n_images": len(in_variant),
            "n_pie": n_pie, "shown": len(rows),
            "confused": [[true, wrong, count] for (true, wrong), count in sorted(
                pairs.items(), key=lambda item: (-item[1], item[0]))[:TOP_CONFUSED]],
            "pies": pies,
        })
    largest = int(max([-1] + [max(v["pies"]["label"] + v["pies"]["dense"]
                                  + v["pies"]["variant"], default=-1) for v in out]))
    names = list(class_names or [])
    names += [str(i) for i in range(len(names), largest + 1)]
    return {"classes": names, "variants": out, "cap": cap, "total_pies": total}


def render(data, title, missing=None):
    """The page's HTML from `explorer_data` (or, with `missing`, a page naming the
    command that makes pie.csv)."""
    template = _environment().get_template("pies.html.j2")
    return template.render(title=title, data_json=script_json(data), missing=missing)


def _environment():
    import jinja2
    return jinja2.Environment(loader=jinja2.PackageLoader("pie.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def explorer_html(context):
    """The explorer page for the report's context (a Context of sections)."""
    title = ", ".join(sorted(context.manifest["dataset"].astype(str).unique()))
    if not context.exists(PIE_TABLE):
        return render({"classes": [], "variants": [], "cap": None, "total_pies": 0}, title,
                      missing={"file": PIE_TABLE, "command": context.command(PIE_TABLE)})
    return render(context_data(context), title)


def context_data(context):
    """`explorer_data` of the report's pie.csv and classes.json, computed once per build
    (the page and the report's section both use it)."""
    cached = getattr(context, "_pie_explorer_data", None)
    if cached is None:
        names = context.class_names()
        if names is not None and not (isinstance(names, list)
                                      and all(isinstance(n, str) for n in names)):
            raise records.ContractError(f"{context.path('classes.json')} must hold a JSON "
                                        "list of class names (strings)")
        cached = explorer_data(context.table(PIE_TABLE), names, context.variants)
        context._pie_explorer_data = cached
    return cached


# ----------------------------------------------------------------- report section


def variant_rows(context):
    """Per variant: label, PIEs, classes with PIEs, the most confused pair (the
    report's `pie_explorer` section, registered in frontier_section)."""
    from pie.report import sections  # at call time: sections imports the modules that
    # register sections, and frontier_section imports this one

    data = context_data(context)
    rows = []
    for variant in data["variants"]:
        top = variant["confused"][0] if variant["confused"] else None
        pair = (f"{data['classes'][top[0]]} → {data['classes'][top[1]]} ({top[2]})"
                if top else sections.NOT_APPLICABLE)
        classes = len(set(variant["pies"]["label"]))
        rows.append([variant["label"], str(variant["n_pie"]), str(classes), pair])
    return rows
