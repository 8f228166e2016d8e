"""The PIE explorer (pie.report.explorer): its embedded data and its escaping.

A hand-made workdir (manifest, classes, cost, PIE tables, per-class summary; no
model, no image) is built into a report; the data embedded in `pies.html` must
hold every PIE of pie.csv under its class with its labels and votes, and a hostile
class name must stay inside the JSON as text. tests/test_pie_explorer_browser.py
opens the same page in Chromium.
"""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from pie.analysis import per_class, pie_labels
from pie.io import records
from pie.io.workdir import Workdir
from pie.report import build, explorer, sections

HOSTILE_NAME = "</script><img src=x onerror=alert(1)>"
CLASS_NAMES = [HOSTILE_NAME, "line\u2028separator & <b>", "cat", "dog", "owl"]
# (method, sparsity): m_by_n stands for any method the trainer may add.
VARIANTS = [("dense", 0.0), ("magnitude", 0.5), ("magnitude", 0.9), ("m_by_n", 0.5)]
SEEDS = (0, 1, 2)
N_IMAGES = 30
GZIP = {"dense": 40000, "magnitude": 30000, "m_by_n": 21000}


def _manifest():
    rows = []
    for method, sparsity in VARIANTS:
        for seed in SEEDS:
            member_id = f"{records.variant_key(method, sparsity)}_seed{seed}"
            rows.append(dict(member_id=member_id, method=method, sparsity=sparsity,
                             measured_sparsity=sparsity, seed=seed, dataset="digits",
                             model="small_cnn", top1=0.9 - 0.1 * sparsity + 0.01 * seed,
                             path=f"checkpoints/{member_id}",
                             model_file=f"checkpoints/{member_id}/model.keras"))
    return pd.DataFrame(rows, columns=records.MANIFEST_COLUMNS)


def pie_table(seed=0):
    """pie.csv rows of the three compressed variants: known labels, votes and ties."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_IMAGES) % len(CLASS_NAMES)
    rows = []
    for index, (method, sparsity) in enumerate(VARIANTS[1:]):
        is_pie = rng.random(N_IMAGES) < 0.3 + 0.2 * index
        is_pie[index] = True  # every class 0..2 has a PIE somewhere
        baseline = np.where(np.arange(N_IMAGES) % 3 == 0, (labels + 1) % 5, labels)
        variant = np.where(is_pie, (baseline + 1 + index) % 5, baseline)
        for image_id in range(N_IMAGES):
            rows.append(dict(
                method=method, sparsity=sparsity, image_id=image_id, label=labels[image_id],
                baseline_modal_label=baseline[image_id], variant_modal_label=variant[image_id],
                baseline_n=3, variant_n=3,
                baseline_agreement=[1 / 3, 2 / 3, 1.0][image_id % 3],
                variant_agreement=[1.0, 2 / 3, 1 / 3][image_id % 3],
                baseline_mean_prob=0.9, variant_mean_prob=0.8,
                baseline_tied=image_id % 3 == 0, variant_tied=image_id % 3 == 2,
                is_pie=bool(is_pie[image_id])))
    return pd.DataFrame(rows, columns=pie_labels.PIE_COLUMNS)


def _pie_summary(table):
    summary = table.groupby(["method", "sparsity"], as_index=False).agg(
        n_images=("image_id", "size"), n_pie=("is_pie", "sum"))
    summary["pie_fraction"] = summary["n_pie"] / summary["n_images"]
    for column in pie_labels.SUMMARY_COLUMNS:
        if column not in summary.columns:
            summary[column] = "highest" if column == "ties" else 0.5
    return summary[pie_labels.SUMMARY_COLUMNS]


def class_summary(hurt):
    """A tstatistic_summary.csv with every column, `hurt` classes per variant key."""
    rows = []
    for method, sparsity in VARIANTS[1:]:
        row = {column: 0.0 for column in per_class.SUMMARY_COLUMNS}
        row.update(method=method, sparsity=sparsity, test="welch", correction="bh",
                   rule="p < 0.05", n_baseline=3, n_variant=3, baseline_mean_top1=0.91,
                   variant_mean_top1=0.9 - 0.1 * sparsity + 0.01,
                   n_classes_hurt=hurt[records.variant_key(method, sparsity)])
        rows.append(row)
    return pd.DataFrame(rows, columns=per_class.SUMMARY_COLUMNS)


def cost_table(manifest):
    cost = pd.DataFrame({"member_id": manifest["member_id"], "method": manifest["method"],
                         "sparsity": manifest["sparsity"], "seed": manifest["seed"],
                         "top1": manifest["top1"]})
    cost["gzip_bytes"] = [GZIP[m] + 10 * s for m, s in zip(manifest["method"], manifest["seed"])]
    cost["latency_ms_batch1"] = 0.2
    for column in ("params", "nonzero_params", "file_bytes", "latency_ms_batch32",
                   "tflite_bytes", "tflite_gzip_bytes", "repeats", "num_threads",
                   "gzip_level"):
        cost[column] = 1
    cost["latency_model"] = "float"
    return cost


HURT = {"magnitude_0.5": 1, "magnitude_0.9": 3, "m_by_n_0.5": 1}


def make_workdir(workdir):
    """A workdir with what the explorer and the frontier read, and nothing that needs a
    model or an image (the PIE grid and the robustness sections say 'not measured')."""
    wd = Workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    manifest = _manifest()
    records.write_csv(wd.manifest, manifest, record=False)
    records.write_json(wd.classes, CLASS_NAMES)
    table = pie_table()
    records.write_csv(wd.file("pie"), table)
    records.write_csv(wd.file("pie_summary"), _pie_summary(table))
    records.write_csv(wd.file("tstatistic_summary"), class_summary(HURT))
    records.write_csv(wd.file("cost"), cost_table(manifest))
    return workdir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = make_workdir(str(tmp_path_factory.mktemp("explorer") / "w"))
    build.build_report(workdir, log=lambda line: None)
    return workdir


def embedded_json(page):
    """The text of the page's data element, as written."""
    found = re.findall(r'<script type="application/json" id="pie-data">(.*?)</script>', page,
                       re.S)
    assert len(found) == 1
    return found[0]


def expected_pies(table):
    """{variant key: {class id: [(image id, dense, variant, dense votes, variant votes)]}}
    of the PIE rows, computed directly from pie.csv."""
    expected = {}
    for row in table[table["is_pie"]].itertuples():
        key = records.variant_key(row.method, row.sparsity)
        expected.setdefault(key, {}).setdefault(int(row.label), []).append((
            int(row.image_id), int(row.baseline_modal_label), int(row.variant_modal_label),
            round(row.baseline_agreement * row.baseline_n),
            round(row.variant_agreement * row.variant_n)))
    return {key: {c: sorted(v) for c, v in classes.items()} for key, classes in expected.items()}


def page_pies(data):
    found = {}
    for variant in data["variants"]:
        p = variant["pies"]
        classes = {}
        for i in range(len(p["image_id"])):
            classes.setdefault(p["label"][i], []).append((
                p["image_id"][i], p["dense"][i], p["variant"][i], p["dense_votes"][i],
                p["variant_votes"][i]))
        found[variant["key"]] = {c: sorted(v) for c, v in classes.items()}
    return found


def test_every_pie_is_embedded_under_its_class_with_its_labels(built):
    with open(os.path.join(built, "report", explorer.PAGE_NAME), encoding="utf-8") as handle:
        page = handle.read()
    data = json.loads(embedded_json(page))
    table = pie_table()
    assert page_pies(data) == expected_pies(table)
    assert data["classes"] == CLASS_NAMES
    assert [v["key"] for v in data["variants"]] == ["m_by_n_0.5", "magnitude_0.5",
                                                    "magnitude_0.9"]
    for variant in data["variants"]:
        rows = table[[records.variant_key(m, s) == variant["key"]
                      for m, s in zip(table["method"], table["sparsity"])]]
        pies = rows[rows["is_pie"]]
        assert variant["n_pie"] == variant["shown"] == len(pies)
        assert variant["n_images"] == len(rows)
        # Ties come from the *_tied columns, in the PIEs' order (class, image id).
        ordered = pies.sort_values(["label", "image_id"])
        assert variant["pies"]["dense_tied"] == ordered["baseline_tied"].astype(int).tolist()
        assert variant["pies"]["variant_tied"] == ordered["variant_tied"].astype(int).tolist()
        # The most confused pairs: (true, variant modal) counted directly.
        wrong = pies[pies["variant_modal_label"] != pies["label"]]
        counts = wrong.groupby(["label", "variant_modal_label"]).size()
        top = counts.max()
        assert variant["confused"][0][2] == top
        assert tuple(variant["confused"][0][:2]) in set(counts[counts == top].index)


def test_a_hostile_class_name_stays_text_inside_the_json(built):
    with open(os.path.join(built, "report", explorer.PAGE_NAME), encoding="utf-8") as handle:
        page = handle.read()
    text = embedded_json(page)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert page.count("</script>") == 2  # the data element's and the script's own
    assert HOSTILE_NAME not in page and "<img" not in page
    assert json.loads(text)["classes"][0] == HOSTILE_NAME
    # The page fetches nothing: its policy allows no source but inline script and style.
    assert "default-src 'none'" in page
    assert not re.search(r'\b(src|href)="(https?:)?//', page)


def test_script_json_escapes_what_could_end_a_script():
    text = explorer.script_json({"a": "</script>&\u2028\u2029<!--"})
    assert text == ('{"a":"\\u003c/script\\u003e\\u0026\\u2028\\u2029\\u003c!--"}')
    assert json.loads(text) == {"a": "</script>&\u2028\u2029<!--"}


def test_filename_column_is_shown_and_ties_derive_from_votes_without_a_tie_column():
    table = pie_table().drop(columns=["baseline_tied", "variant_tied"])
    table["filename"] = [f"img_{i:04d}.JPEG" for i in table["image_id"]]
    variants = pd.DataFrame({"key": ["magnitude_0.5"], "label": ["magnitude 0.5"]})
    data = explorer.explorer_data(table, CLASS_NAMES, variants)
    first = next(v for v in data["variants"] if v["key"] == "magnitude_0.5")
    pies = table[(table["method"] == "magnitude") & (table["sparsity"] == 0.5)
                 & table["is_pie"]].sort_values(["label", "image_id"])
    assert first["pies"]["filename"] == [f"img_{i:04d}.JPEG" for i in pies["image_id"]]
    # 3 of 3 or 2 of 3 votes cannot be a tie; 1 of 3 may be (three labels, one vote each).
    votes = np.rint(pies["baseline_agreement"] * 3).astype(int)
    assert first["pies"]["dense_tied"] == [0 if v >= 2 else None for v in votes]
    # A variant missing from the report's table is still listed, under its key.
    assert {v["key"] for v in data["variants"]} == {"magnitude_0.5", "magnitude_0.9",
                                                    "m_by_n_0.5"}


def test_the_report_links_to_the_explorer(built):
    with open(os.path.join(built, "report", "index.html"), encoding="utf-8") as handle:
        page = handle.read()
    section = re.search(r'<section id="pie_explorer".*?</section>', page, re.S).group(0)
    assert f'<a href="{explorer.PAGE_NAME}">' in section
    # One row per compressed variant with its PIE count.
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", section)
    table = pie_table()
    counts = table[table["is_pie"]].groupby(["method", "sparsity"]).size()
    assert sorted(rows) == sorted((f"{m} {s:g}", str(n)) for (m, s), n in counts.items())


def test_without_pie_csv_the_page_names_the_command(tmp_path):
    workdir = make_workdir(str(tmp_path / "w"))
    os.remove(Workdir(workdir).file("pie"))
    page = explorer.explorer_html(sections.Context(workdir))
    assert 'id="not-measured"' in page
    assert f"python -m pie_dataset_gen.aggregate_predictions --workdir={workdir}" in page
    assert json.loads(embedded_json(page))["variants"] == []
