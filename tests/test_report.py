"""Tests of the report stage (report/): sections, summary table, escaping, CLI.

Most tests build a report from a small synthetic workdir written here with the
documented columns (the robustness tables come from pie.analysis.robustness itself, so
they have exactly the stage's columns); one test runs the real tiny pipeline.
"""
import html
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import error_lines, run_stage
from pie.analysis import noise_floor, per_class, pie_labels, robustness, subgroups
from pie.io import cli, records
from pie.report import build, sections
from pie.stages import cost as cost_stage
from pie.io.workdir import Workdir

HOSTILE_NAME = '<b>&"x'  # must reach the page as text, never as markup
CLASS_NAMES = [HOSTILE_NAME] + [f"class {i}" for i in range(1, 10)]
VARIANTS = [("dense", 0.0), ("magnitude", 0.5), ("magnitude", 0.9),
            ("quant_dynamic_int8", 0.0)]
SEEDS = (0, 1, 2)
DISTRIBUTIONS = ("clean", "gaussian_noise/3", "fog/3")
N_PIE_IMAGES = 40
FORGOTTEN_IMAGE = 3  # a PIE of magnitude 0.9 of class 0 that the dense models get right


# ------------------------------------------------------------------ synthetic workdir


def _manifest(rng):
    rows = []
    base = {"dense": 0.95, "magnitude": 0.93, "quant_dynamic_int8": 0.945}
    for method, sparsity in VARIANTS:
        for seed in SEEDS:
            member_id = f"{records.variant_key(method, sparsity)}_seed{seed}"
            top1 = base[method] - 0.05 * sparsity + rng.uniform(-0.01, 0.01)
            rows.append(dict(member_id=member_id, method=method, sparsity=sparsity,
                             measured_sparsity=sparsity, seed=seed, dataset="digits",
                             model="small_cnn", top1=round(top1, 4),
                             path=f"checkpoints/{member_id}",
                             model_file=f"checkpoints/{member_id}/model.keras"))
    return pd.DataFrame(rows, columns=records.MANIFEST_COLUMNS)


def _tstatistic(rng):
    """The per-class tables made by pie.analysis.per_class itself from per-class recalls:
    class 0 hurt, class 1 'helped' although it loses recall (less than the average),
    class 9 right for every member (never testable)."""
    rows = []
    for method, sparsity in VARIANTS:
        for seed in SEEDS:
            drop = np.full(len(CLASS_NAMES), 0.0 if method == "dense" else 0.02 + 0.05 * sparsity)
            if method != "dense":
                drop[0], drop[1] = 0.3 * sparsity + 0.05, 0.01
            recall = np.clip(0.9 - drop + rng.normal(0, 0.004, len(CLASS_NAMES)), 0, 1)
            recall[9] = 1.0
            for class_id, name in enumerate(CLASS_NAMES):
                rows.append(dict(member_id=f"{records.variant_key(method, sparsity)}_seed{seed}",
                                 method=method, sparsity=sparsity, seed=seed,
                                 class_id=class_id, class_name=name, n=10, correct=0,
                                 recall=recall[class_id], precision=np.nan,
                                 member_top1=recall.mean()))
    return per_class.per_class_tstatistic(pd.DataFrame(rows), resamples=200)


def _pie(rng):
    rows = []
    labels = rng.integers(0, len(CLASS_NAMES), N_PIE_IMAGES)
    labels[FORGOTTEN_IMAGE] = 0
    for method, sparsity in VARIANTS[1:]:
        is_pie = rng.random(N_PIE_IMAGES) < 0.1 + 0.3 * sparsity
        is_pie[FORGOTTEN_IMAGE] = sparsity == 0.9
        # Half the images the dense models get wrong too (PIEs that are not forgotten).
        baseline = np.where(np.arange(N_PIE_IMAGES) % 2 == 0, (labels + 2) % 10, labels)
        baseline[FORGOTTEN_IMAGE] = labels[FORGOTTEN_IMAGE]
        variant = np.where(is_pie, (baseline + 1) % len(CLASS_NAMES), baseline)
        for image_id in range(N_PIE_IMAGES):
            rows.append(dict(method=method, sparsity=sparsity, image_id=image_id,
                             label=labels[image_id], baseline_modal_label=baseline[image_id],
                             variant_modal_label=variant[image_id], baseline_n=3, variant_n=3,
                             baseline_agreement=rng.choice([2 / 3, 1.0]),
                             variant_agreement=rng.choice([2 / 3, 1.0]),
                             baseline_mean_prob=0.9, variant_mean_prob=0.8,
                             baseline_tied=image_id % 7 == 0, variant_tied=image_id % 5 == 0,
                             is_pie=bool(is_pie[image_id])))
    table = pd.DataFrame(rows, columns=pie_labels.PIE_COLUMNS)
    summary = table.groupby(["method", "sparsity"], as_index=False).agg(
        n_images=("image_id", "size"), n_pie=("is_pie", "sum"))
    summary["pie_fraction"] = summary["n_pie"] / summary["n_images"]
    for column in pie_labels.SUMMARY_COLUMNS[5:]:
        if column == "ties":
            summary[column] = "highest"
        elif column.startswith("n_"):
            summary[column] = rng.integers(1, 5, len(summary))
        else:
            summary[column] = rng.uniform(0.2, 1.0, len(summary))
    return table, summary[pie_labels.SUMMARY_COLUMNS]


def _accuracy(manifest, rng):
    rows = []
    for member in manifest.itertuples():
        for distribution in DISTRIBUTIONS:
            drop = 0.0 if distribution == "clean" else rng.uniform(0.05, 0.3)
            rows.append(dict(member_id=member.member_id, method=member.method,
                             sparsity=member.sparsity, seed=member.seed,
                             distribution=distribution, top1=member.top1 - drop,
                             n_images=N_PIE_IMAGES))
    return pd.DataFrame(rows)


def _noise_similarity(rng):
    rows = []
    for method, sparsity in VARIANTS[1:] + [(robustness.DENSE_REFERENCE, 0.0)]:
        for eps in (0.0, 0.1, 0.3, 0.7):
            rows.append(dict(method=method, sparsity=sparsity, eps=eps,
                             agreement_mean=1 - eps * rng.uniform(0.2, 0.6),
                             agreement_std=0.01, l2_mean=eps * rng.uniform(0.2, 0.6),
                             l2_std=0.01, n_pairs=3, draws=2, images=50))
    return pd.DataFrame(rows)


def _noisy_accuracy(manifest, rng):
    """Top-1 of every member on 3 noise draws at each eps (for the noise prune potential)."""
    rows = []
    for member in manifest.itertuples():
        for eps in (0.0, 0.1, 0.3, 0.7):
            for draw in range(1 if eps == 0 else 3):
                rows.append(dict(method=member.method, sparsity=member.sparsity,
                                 seed=member.seed, eps=eps, draw=draw, images=N_PIE_IMAGES,
                                 top1=member.top1 - eps * (0.1 + 0.3 * member.sparsity)
                                 + rng.uniform(-0.01, 0.01)))
    return pd.DataFrame(rows)


def _subgroups(rng):
    rows = []
    for method, sparsity in VARIANTS[1:]:
        for attribute, group in (("thickness", "thick"), ("thickness", "thin"),
                                 ("stroke", "a&b"), ("stroke", "c")):
            change = rng.normal(0, 0.02)
            rows.append(dict(method=method, sparsity=sparsity, attribute=attribute,
                             group=group, n_images=20, share=0.5, n_dense=3, n_variant=3,
                             dense_error=0.1, variant_error=0.1 + change, dense_error_all=0.1,
                             variant_error_all=0.1, error_change_vs_overall=change,
                             dense_fpr=np.nan, variant_fpr=np.nan, dense_fpr_all=np.nan,
                             variant_fpr_all=np.nan, fpr_change_vs_overall=np.nan,
                             dense_fnr=np.nan, variant_fnr=np.nan, dense_fnr_all=np.nan,
                             variant_fnr_all=np.nan, fnr_change_vs_overall=np.nan,
                             pie_rate=0.2, pie_rate_all=0.2, pie_share=rng.uniform(0.3, 0.7),
                             t_statistic=2.0, p_value=rng.choice([0.01, 0.4]),
                             correction="none", direction="hurt" if change > 0 else "helped"))
            rows[-1]["significant"] = rows[-1]["p_value"] <= 0.05
    return pd.DataFrame(rows, columns=subgroups.SUBGROUP_COLUMNS)


def _noise_floor(rng):
    """A noise floor table: the magnitude 0.9 PIE share above its floor, nothing else."""
    rows = []
    for method, sparsity in VARIANTS[1:]:
        for measure in noise_floor.MEASURES:
            floor = rng.uniform(0.01, 0.03) if measure == "pie_share" else rng.uniform(0, 1)
            value = floor * (3 if (sparsity == 0.9 and measure == "pie_share") else 0.9)
            rows.append(dict(measure=measure, method=method, sparsity=sparsity,
                             distribution="clean", members_per_half=1, splits=3,
                             variant_value=value, floor_mean=floor, floor_q95=1.5 * floor,
                             exceeds_floor=value > 1.5 * floor, note=""))
    return pd.DataFrame(rows, columns=noise_floor.NOISE_FLOOR_COLUMNS)


def _cost(manifest, rng):
    cost = manifest[["member_id", "method", "sparsity", "top1"]].copy()
    cost["params"] = 10000
    cost["nonzero_params"] = (10000 * (1 - cost["sparsity"])).astype(int)
    cost["file_bytes"] = 40000 + rng.integers(0, 100, len(cost))
    cost["gzip_bytes"] = (30000 * (1 - 0.8 * cost["sparsity"])).astype(int) + rng.integers(
        0, 100, len(cost))
    cost["latency_ms_batch1"] = rng.uniform(0.1, 0.2, len(cost))
    cost["latency_ms_batch32"] = rng.uniform(1.0, 2.0, len(cost))
    cost["seed"] = manifest["seed"]
    cost["tflite_bytes"] = cost["tflite_gzip_bytes"] = np.nan
    cost["latency_model"], cost["repeats"], cost["num_threads"] = "keras", 5, 1
    cost["gzip_level"] = 6
    return cost[cost_stage.COST_COLUMNS]


def _toy(rng):
    rows = []
    for criterion in ("lrp", "weight"):
        for n in (1, 10):
            for seed in (0, 1):
                for scenario in ("train", "noisy_test"):
                    rows.append(dict(dataset="moons", criterion=criterion, samples_per_class=n,
                                     seed=seed, scenario=scenario, stage="before",
                                     accuracy=0.99))
                    rows.append(dict(dataset="moons", criterion=criterion, samples_per_class=n,
                                     seed=seed, scenario=scenario, stage="after",
                                     accuracy=rng.uniform(0.5, 0.99)))
    return pd.DataFrame(rows)


def make_workdir(workdir, seed=0):
    """A workdir with every input of the report, small and with known values."""
    rng = np.random.default_rng(seed)
    os.makedirs(workdir, exist_ok=True)
    manifest = _manifest(rng)
    records.write_csv(Workdir(workdir).manifest, manifest)
    records.write_json(os.path.join(workdir, "classes.json"), CLASS_NAMES)
    records.write_json(os.path.join(workdir, "dataset.json"), {
        "dataset": "digits", "family": "small", "num_classes": 10,
        "class_names": CLASS_NAMES, "data_dir": None, "label_attribute": None,
        "toy_noise": None, "toy_seed": 0})
    table, summary = _tstatistic(rng)
    records.write_csv(os.path.join(workdir, "per_class", "tstatistic.csv"), table)
    records.write_csv(os.path.join(workdir, "per_class", "tstatistic_summary.csv"), summary)
    records.write_csv(os.path.join(workdir, "per_class", "subgroups.csv"), _subgroups(rng))
    table, summary = _pie(rng)
    records.write_csv(os.path.join(workdir, "pie", "pie.csv"), table)
    records.write_csv(os.path.join(workdir, "pie", "pie_summary.csv"), summary)
    records.write_csv(Workdir(workdir).file("noise_floor"), _noise_floor(rng))
    accuracy = robustness.with_mean_corruption(_accuracy(manifest, rng))
    per_seed, excess = robustness.excess_error(accuracy)
    robust = os.path.join(workdir, "robustness")
    records.write_csv(os.path.join(robust, "accuracy.csv"), accuracy)
    records.write_csv(os.path.join(robust, "excess_error.csv"), excess)
    records.write_csv(os.path.join(robust, "excess_error_per_seed.csv"), per_seed)
    records.write_csv(os.path.join(robust, "excess_error_fit.csv"),
                      robustness.excess_error_fit(per_seed))
    records.write_csv(os.path.join(robust, "noise_prune_potential.csv"),
                      robustness.noise_prune_potential(_noisy_accuracy(manifest, rng)))
    records.write_csv(os.path.join(robust, "prune_potential.csv"),
                      robustness.prune_potential(accuracy, delta=0.5))
    records.write_csv(os.path.join(robust, "prune_potential_summary.csv"),
                      robustness.prune_potential_summary(accuracy, delta=0.5))
    records.write_csv(os.path.join(robust, "noise_similarity.csv"), _noise_similarity(rng))
    records.write_csv(os.path.join(robust, "informative_features.csv"), pd.DataFrame({
        "method": ["magnitude", "magnitude", robustness.DENSE_REFERENCE],
        "sparsity": [0.5, 0.9, 0.0], "iou_mean": [0.6, 0.4, 0.7], "iou_std": [0.1, 0.1, 0.05],
        "conf_own_mask": [0.8, 0.7, 0.85], "conf_other_mask": [0.6, 0.5, 0.7],
        "reference_conf_own_mask": [0.85, 0.85, 0.8],
        "reference_conf_other_mask": [0.7, 0.6, 0.75], "n_pairs": [3, 3, 3],
        "images": [50, 50, 50], "fraction": [0.1, 0.1, 0.1], "selection": "gradient",
        "patch": 1, "features": 64, "sis_threshold": np.nan, "no_sis": 0,
        "reference_no_sis": 0, "features_kept_mean": np.nan}))
    records.write_csv(os.path.join(workdir, "quantization", "cost.csv"), _cost(manifest, rng))
    os.makedirs(os.path.join(workdir, "toy"))
    records.write_csv(os.path.join(workdir, "toy", "results.csv"), _toy(rng))
    _toy_figure(os.path.join(workdir, "toy", "boundaries_moons.png"), (200, 30, 30))
    return workdir


def _toy_figure(path, color):
    """A PNG written and recorded in the toy study's stamp, as toy_plots does."""
    Image.new("RGB", (40, 30), color).save(path)
    records.record_written(path, stage=sections.TOY_STAGE)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    workdir = make_workdir(str(tmp_path_factory.mktemp("report") / "w"))
    build.build_report(workdir, fmt="md", log=lambda message: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    return workdir, page


def copy_workdir(source, target):
    """A copy of `source` without its report, to change inputs freely."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report"))
    return str(target)


# ------------------------------------------------------------------------ page parsing


def page_sections(page):
    """{section id: (class attribute, inner html)}."""
    found = re.findall(r'<section id="(\w+)" class="([^"]*)">(.*?)</section>', page, re.S)
    return {name: (classes, body) for name, classes, body in found}


def summary_rows(page):
    """{variant key: [cell texts]} of the summary table."""
    rows = re.findall(r'<tr class="variant-row[^"]*" data-variant="([^"]+)">(.*?)</tr>',
                      page, re.S)
    return {key: [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", cells, re.S)]
            for key, cells in rows}


def column(name):
    headers = [c.header for c in sections.SUMMARY_COLUMNS]
    return headers.index(name) if name in headers else next(
        i for i, header in enumerate(headers) if header.startswith(name))


# ------------------------------------------------------------------------------ tests


def test_every_section_is_present_and_filled(synthetic):
    _, page = synthetic
    found = page_sections(page)
    assert list(found) == list(sections.SECTIONS)
    for name, (classes, body) in found.items():
        assert "not-measured" not in classes, name
        assert "Not measured" not in body, name
        assert "<img" in body or "<table" in body, f"section {name} is empty"
        assert sections.SECTIONS[name].what in html.unescape(body)
    # One self-contained file: images inline, no external resource, no script.
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_summary_has_one_row_per_variant_with_values_from_the_inputs(synthetic):
    workdir, page = synthetic
    rows = summary_rows(page)
    assert list(rows) == [records.variant_key(m, s) for m, s in VARIANTS]
    manifest = pd.read_csv(Workdir(workdir).manifest)
    top1 = manifest[manifest["member_id"].str.startswith("magnitude_0.9_")]["top1"].to_numpy()
    row = rows["magnitude_0.9"]
    assert row[0] == "magnitude 0.9"
    assert row[column("members")] == "3"
    assert row[column("top-1 % (mean ± std)")] == (
        f"{100 * top1.mean():.1f} ± {100 * top1.std(ddof=1):.1f}")
    summary = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic_summary.csv"))
    expected = summary[summary["sparsity"] == 0.9].iloc[0]
    # The default correction (bh) beside the uncorrected count.
    assert expected["correction"] == "bh"
    assert row[column("classes hurt")] == (
        f"{expected['n_classes_hurt']} ({expected['n_classes_hurt_uncorrected']} uncorrected)")
    helped = (f"{expected['n_classes_helped']} ({expected['n_classes_helped_uncorrected']} "
              "uncorrected)")
    if expected["n_helped_lost_recall"]:
        helped += f" ({expected['n_helped_lost_recall']} lost recall)"
    assert row[column("classes helped (lost less than average)")] == helped
    assert expected["n_helped_lost_recall"] >= 1  # class 1 lost recall, less than average
    assert row[column("smallest detectable class change (points, 80% power)")] == (
        f"{expected['min_detectable_delta_points']:.1f}")
    pies = pd.read_csv(os.path.join(workdir, "pie", "pie_summary.csv"))
    pies = pies[pies["sparsity"] == 0.9].iloc[0]
    assert row[column("top-1 % on PIEs, held-out seed (dense → variant)")] == (
        f"{100 * pies['top1_on_pie_heldout_dense']:.1f} → "
        f"{100 * pies['top1_on_pie_heldout_variant']:.1f}")
    assert row[column("top-1 % on PIEs, in-sample (dense → variant)")] == (
        f"{100 * pies['baseline_top1_pie']:.1f} → {100 * pies['variant_top1_pie']:.1f}")
    pie = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
    pie = pie[pie["sparsity"] == 0.9]
    assert row[column("PIEs %")] == (f"{100 * pie['is_pie'].mean():.1f} "
                                     f"({100 * pies['pie_tied_share']:.0f}% by a tie)")
    floor = pd.read_csv(Workdir(workdir).file("noise_floor"))
    floor = floor[(floor["sparsity"] == 0.9) & (floor["measure"] == "pie_share")].iloc[0]
    cell = row[column("against the noise floor")]
    assert cell.startswith("1 v 1: PIEs ") and (
        f"PIEs {100 * floor['variant_value']:.1f}% · {100 * floor['floor_mean']:.1f}% above"
        in cell)
    # Corrupted top-1: each member's mean over the corruptions, then over members.
    accuracy = pd.read_csv(os.path.join(workdir, "robustness", "accuracy.csv"))
    shifted = accuracy[accuracy["distribution"].isin(["gaussian_noise/3", "fog/3"])
                       & accuracy["member_id"].str.startswith("magnitude_0.9_")]
    per_member = shifted.groupby("member_id")["top1"].mean()
    assert row[column("corrupted top-1 % (mean)")] == f"{100 * per_member.mean():.1f}"
    cost = pd.read_csv(os.path.join(workdir, "quantization", "cost.csv"))
    gzip_kib = cost[cost["member_id"].str.startswith("magnitude_0.9_")]["gzip_bytes"].mean() / 1024
    assert row[column("gzip KiB (mean)")] == f"{gzip_kib:.1f}"
    # The dense baseline has no comparison with itself.
    dense = rows["dense_0"]
    assert dense[column("classes hurt")] == sections.NOT_APPLICABLE
    assert dense[column("excess error (points, mean)")] == sections.NOT_APPLICABLE
    assert sections.DASH not in sum(rows.values(), [])


def test_excess_error_cells_follow_the_stage_tables(synthetic):
    workdir, page = synthetic
    rows = summary_rows(page)
    excess = pd.read_csv(os.path.join(workdir, "robustness", "excess_error.csv"))
    mean_row = excess[(excess["distribution"] == robustness.MEAN_CORRUPTION)
                      & (excess["sparsity"] == 0.5)]
    assert rows["magnitude_0.5"][column("excess error (points, mean)")] == (
        f"{mean_row['excess_error_mean'].iloc[0]:+.2f}")


def tables_of(body):
    """[(header cells, [row cells])] of every table in a section body."""
    found = []
    for table in re.findall(r"<table.*?</table>", body, re.S):
        header = [html.unescape(c) for c in re.findall(r"<th>(.*?)</th>", table, re.S)]
        rows = [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
                for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
        found.append((header, [r for r in rows if r]))
    return found


def test_prune_potential_is_one_row_per_method_from_the_seed_values(synthetic):
    workdir, page = synthetic
    assert not any("prune potential" in c.header for c in sections.SUMMARY_COLUMNS)
    headline = pd.read_csv(os.path.join(workdir, "robustness",
                                        "prune_potential_summary.csv")).iloc[0]
    body = page_sections(page)["summary"][1]
    (header, rows), = [t for t in tables_of(body) if t[0][:1] == ["pruning method"]]
    assert rows == [["magnitude",
                     f"{headline['clean_mean']:.2f} ± {headline['clean_std']:.2f}",
                     f"{headline['shifted_mean']:.2f} ± {headline['shifted_std']:.2f}",
                     f"{headline['shifted_min']:.2f} ({headline['shifted_min_distribution']})",
                     headline["differences_per_seed"],
                     f"clean − shifted {headline['difference_mean']:+.3f} (95% interval "
                     f"{headline['difference_ci_low']:+.3f} to "
                     f"{headline['difference_ci_high']:+.3f}, approximate: few seeds), paired "
                     f"t-test p = {headline['difference_p_value']:.3g}, lower under shift for "
                     f"{headline['n_seeds_lower_shifted']} of 3 seeds", "3", "2"]]
    # The card of the most compressed variant's method says the same.
    assert f"{headline['clean_mean']:.2f} ± {headline['clean_std']:.2f}" in body


def test_cards_explain_helped_and_give_the_raw_recall_change(synthetic):
    workdir, page = synthetic
    summary = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic_summary.csv"))
    row = summary[summary["sparsity"] == 0.9].iloc[0]
    body = html.unescape(page_sections(page)["summary"][1])
    assert (f"{row['n_classes_hurt']} / {row['n_classes_helped']} "
            f"({row['n_classes_hurt_uncorrected']} / {row['n_classes_helped_uncorrected']} "
            "uncorrected)") in body
    assert (f"classes significantly hurt / helped ({row['rule']}; "
            f"{row['n_classes_ceiling']} ceiling classes not tested); helped = lost less than "
            f"the average ({row['n_helped_lost_recall']} of {row['n_classes_helped']} still lost "
            f"recall). Raw recall change, mean points: hurt "
            f"{100 * row['recall_change_hurt']:+.1f}, helped "
            f"{100 * row['recall_change_helped']:+.1f}") in body
    assert row["recall_change_helped"] < 0 < row["n_classes_helped"]
    assert ("smallest class change the test detects at 80% power with 3 dense and 3 "
            "compressed members") in body
    assert row["rule"] in body  # the footnote states the rule
    pies = pd.read_csv(os.path.join(workdir, "pie", "pie_summary.csv"))
    pies = pies[pies["sparsity"] == 0.9].iloc[0]
    assert (f'<div class="value">{100 * pies["top1_on_pie_heldout_variant"]:.1f} %</div>'
            f'<div class="label">its top-1 on PIEs, held-out seed (dense: '
            f'{100 * pies["top1_on_pie_heldout_dense"]:.1f} %; in-sample '
            f'{100 * pies["baseline_top1_pie"]:.1f} → {100 * pies["variant_top1_pie"]:.1f} %)'
            ) in body


def test_power_and_rule_table_per_variant(synthetic):
    workdir, page = synthetic
    summary = pd.read_csv(os.path.join(workdir, "per_class", "tstatistic_summary.csv"))
    body = page_sections(page)["significant_classes"][1]
    (header, rows), = tables_of(body)
    assert header[-2:] == ["smallest detectable class change (points, 80% power)", "rule"]
    assert [r[0] for r in rows] == ["magnitude 0.5", "magnitude 0.9", "quant_dynamic_int8"]
    for cells, expected in zip(rows, summary.sort_values(["method", "sparsity"]).itertuples()):
        assert cells[-2] == f"{expected.min_detectable_delta_points:.1f}"
        assert cells[-1] == expected.rule
        assert cells[2] == "9"  # class 9: every member right, not tested


def test_subgroup_chart_and_table_share_one_sign(synthetic, monkeypatch):
    drawn = []
    original = sections.plots.group_changes
    monkeypatch.setattr(sections.plots, "group_changes",
                        lambda rows, title: drawn.append(rows) or original(rows, title))
    context = sections.Context(synthetic[0])
    blocks = sections.SECTIONS["subgroups"].build(context)
    table = [b for b in blocks if b["kind"] == "table"][0]
    shown = {f"{r[0]} = {r[1]}": float(r[5]) for r in table["rows"]}
    plotted = dict(zip(drawn[0]["label"], 100 * drawn[0]["change"]))
    assert shown.keys() == plotted.keys()
    for label, value in shown.items():
        assert plotted[label] == pytest.approx(value, abs=0.006), label


def test_class_names_are_escaped(synthetic):
    _, page = synthetic
    assert HOSTILE_NAME not in page
    assert html.escape(HOSTILE_NAME, quote=True).replace("&quot;", "&#34;") in page


def test_pie_grid_shows_the_forgotten_images_first(synthetic):
    workdir, page = synthetic
    body = page_sections(page)["pie_grid"][1]
    alts = re.findall(r'alt="eval image (\d+)"', body)
    pie = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
    pie = pie[(pie["sparsity"] == 0.9) & pie["is_pie"]]
    n_pie = len(pie)
    assert len(alts) == min(n_pie, sections.PIE_GRID_SIZE)
    forgotten = pie[(pie["baseline_modal_label"] == pie["label"])
                    & (pie["variant_modal_label"] != pie["label"])]["image_id"]
    assert 0 < len(forgotten) < len(alts) and FORGOTTEN_IMAGE in set(forgotten)
    assert set(map(int, alts[:len(forgotten)])) == set(forgotten)
    assert f"of the {n_pie} PIEs of magnitude 0.9" in body


def test_markdown_summary_has_a_row_per_variant(synthetic):
    workdir, _ = synthetic
    with open(os.path.join(workdir, "report", "summary.md")) as handle:
        lines = handle.read().splitlines()
    header = [c.header for c in sections.SUMMARY_COLUMNS]
    assert lines[0] == "| " + " | ".join(header) + " |"
    assert lines[1] == "| " + " | ".join(["---"] * len(header)) + " |"
    table = [line for line in lines[2:] if line.startswith("|")]
    assert [line.split(" | ")[0] for line in table[:len(VARIANTS)]] == [
        "| " + sections.variant_label(m, s) for m, s in VARIANTS]
    # Then the per-method prune potential: one row per pruning method.
    assert table[len(VARIANTS)].startswith("| pruning method | prune potential clean")
    assert [line.split(" | ")[0] for line in table[len(VARIANTS) + 2:]] == ["| magnitude"]


def test_markdown_escapes_pipes():
    text = sections.markdown_table({"columns": ["a|b", "c"], "rows": [{"cells": ["x|y", "z"]}],
                                    "footnotes": [("note", "cmd --x")]})
    assert text.splitlines()[0] == "| a\\|b | c |"
    assert text.splitlines()[2] == "| x\\|y | z |"
    assert "- note `cmd --x`" in text


def test_missing_inputs_say_not_measured(synthetic, tmp_path):
    workdir = copy_workdir(synthetic[0], tmp_path / "w")
    os.remove(os.path.join(workdir, "robustness", "noise_similarity.csv"))
    shutil.rmtree(os.path.join(workdir, "quantization"))
    build.build_report(workdir, log=lambda message: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    found = page_sections(page)
    for name, command in (("noise_similarity", "robustness_tests.noise_similarity"),
                          ("cost", "pie.stages.cost")):
        classes, body = found[name]
        assert "not-measured" in classes
        assert "Not measured" in body and "<img" not in body
        assert f"python -m {command} --workdir={workdir}" in html.unescape(body)
    assert "not-measured" not in found["corruptions"][0]
    rows = summary_rows(page)
    assert all(row[column("gzip KiB (mean)")] == sections.DASH for row in rows.values())
    summary = html.unescape(found["summary"][1])
    assert "quantization/cost.csv is missing (not measured)" in summary


def test_variant_absent_from_a_present_file_shows_dash_with_its_footnote(synthetic, tmp_path):
    workdir = copy_workdir(synthetic[0], tmp_path / "w")
    path = os.path.join(workdir, "per_class", "tstatistic_summary.csv")
    summary = pd.read_csv(path)
    records.write_csv(path, summary[summary["method"] != "quant_dynamic_int8"])
    build.build_report(workdir, log=lambda message: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    assert summary_rows(page)["quant_dynamic_int8_0"][column("classes hurt")] == sections.DASH
    assert "the file exists but has no row for that variant" in page


def test_rerun_skips_until_an_input_changes(synthetic, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(synthetic[0], workdir)  # keeps modification times: still up to date
    messages = []
    path = os.path.join(workdir, "report", "index.html")
    written = os.stat(path).st_mtime_ns
    build.build_report(workdir, fmt="md", log=messages.append)
    assert any("up to date, skipping" in m for m in messages)
    assert os.stat(path).st_mtime_ns == written
    build.build_report(workdir, fmt="md", force=True, log=messages.append)
    assert os.stat(path).st_mtime_ns != written
    written = os.stat(path).st_mtime_ns
    changed = os.path.join(workdir, "pie", "pie_summary.csv")
    later = os.stat(changed).st_mtime_ns + 10**9  # a newer input, without waiting
    os.utime(changed, ns=(later, later))
    messages.clear()
    build.build_report(workdir, fmt="md", log=messages.append)
    assert not any("skipping" in m for m in messages)
    assert os.stat(path).st_mtime_ns != written


def test_malformed_input_is_an_error_not_a_silent_gap(synthetic, tmp_path):
    workdir = copy_workdir(synthetic[0], tmp_path / "w")
    path = os.path.join(workdir, "per_class", "tstatistic_summary.csv")
    records.write_csv(path, pd.read_csv(path).drop(columns=["n_classes_hurt"]))
    with pytest.raises(records.ContractError, match=r"lacks columns \['n_classes_hurt'\]"):
        build.build_report(workdir, log=lambda message: None)
    assert not os.path.exists(os.path.join(workdir, "report", "index.html"))


def test_mean_over_corruptions_prefers_the_stage_mean():
    frame = pd.DataFrame({
        "key": ["a", "a", "a", "a", "b", "b", "b"],
        "distribution": ["clean", "fog/3", "snow/1", "mean_corruption", "clean", "fog/3",
                         "imagenet_a"],
        "value": [0.9, 0.5, 0.7, 0.55, 0.8, 0.4, 0.1]})
    means = sections.mean_over_corruptions(frame, ["key"], "value").set_index("key")["value"]
    assert means["a"] == 0.55  # the stage's own mean_corruption row
    assert means["b"] == 0.4  # computed: corruptions only, imagenet_a is not one


def test_heatmap_averages_severities_when_there_are_many_distributions(synthetic):
    context = sections.Context(synthetic[0])
    names = ["clean", robustness.MEAN_CORRUPTION] + [
        f"{c}/{s}" for c in ("fog", "snow", "gaussian_noise", "contrast", "pixelate",
                             "frost", "glass_blur", "saturate", "spatter") for s in range(1, 6)
    ] + [robustness.mean_severity(s) for s in (3, 1, 2, 5, 4)]
    rng = np.random.default_rng(1)
    frame = pd.DataFrame([(key, name, rng.random()) for key in ("dense_0", "magnitude_0.9")
                          for name in names], columns=["key", "distribution", "top1"])
    matrix, labels, columns = sections._variant_pivot(context, frame, "top1")
    assert labels == ["dense", "magnitude 0.9"]
    # Clean first, benchmark order (noise, blur, weather, digital, extra), the means
    # last: over everything, then one per severity (kept as columns).
    assert columns == ["clean", "gaussian_noise", "glass_blur", "snow", "frost", "fog",
                       "contrast", "pixelate", "spatter", "saturate",
                       robustness.MEAN_CORRUPTION] + [f"mean_severity_{s}" for s in range(1, 6)]
    severity_2 = frame[(frame["key"] == "dense_0") & (frame["distribution"] == "mean_severity_2")]
    assert matrix.loc["dense_0", "mean_severity_2"] == severity_2["top1"].item()
    fog = frame[(frame["key"] == "magnitude_0.9") & frame["distribution"].str.startswith("fog/")]
    assert np.isclose(matrix.loc["magnitude_0.9", "fog"], fog["top1"].mean())
    few = frame[frame["distribution"].isin(["clean", "fog/1", "fog/2"])]
    assert sections._variant_pivot(context, few, "top1")[2] == ["clean", "fog/1", "fog/2"]


def test_most_compressed_picks_the_highest_sparsity_pruned_variant(synthetic):
    context = sections.Context(synthetic[0])
    keys = context.variants["key"]
    assert sections.most_compressed(keys, context.variants)["key"] == "magnitude_0.9"
    only_quantized = ["dense_0", "quant_dynamic_int8_0"]
    assert sections.most_compressed(only_quantized, context.variants)["key"] == (
        "quant_dynamic_int8_0")
    assert sections.most_compressed(["dense_0"], context.variants) is None


# -------------------------------------------------------------------------------- CLI


def test_strict_with_a_missing_input_exits_2_with_one_line(synthetic, tmp_path):
    workdir = copy_workdir(synthetic[0], tmp_path / "w")
    os.remove(os.path.join(workdir, "toy", "results.csv"))
    # Groups need image attributes a dataset may lack: --strict never asks for them.
    os.remove(os.path.join(workdir, "per_class", "subgroups.csv"))
    result = run_stage("pie.report.build", f"--workdir={workdir}", "--strict", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: --strict: missing inputs toy/results.csv (run `python -m "
        f"pie.stages.toy_experiment --out={workdir}/toy`)"]
    assert not os.path.exists(os.path.join(workdir, "report"))


def test_bad_flag_exits_2_with_one_line(tmp_path):
    result = run_stage("pie.report.build", f"--workdir={tmp_path}", "--format=pdf", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: flag --format=pdf: value should be one of <html|md>"]


@pytest.mark.parametrize("workdir, message", [
    (None, "--workdir is required: the folder holding population.csv"),
    ("/nonexistent/w", "--workdir=/nonexistent/w is not a folder"),
    ("{empty}", "no population manifest at {empty}/population.csv: run "
                "save_checkpoint.train first"),
])
def test_bad_workdir_is_one_clear_error(tmp_path, workdir, message):
    empty = str(tmp_path)
    workdir = workdir and workdir.format(empty=empty)
    with pytest.raises(ValueError) as raised:
        build.build_report(workdir, log=lambda line: None)
    assert isinstance(raised.value, cli.user_errors())  # cli.run: one line, exit 2
    assert str(raised.value) == message.format(empty=empty)
    assert not os.path.exists(os.path.join(empty, "report"))


# ------------------------------------------------------------------- real tiny pipeline


def test_report_of_a_real_tiny_population(tiny_population, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_population, workdir)
    for stage in ("pie_dataset_gen.predictions", "per_class_accuracy.gen_tstatistic",
                  "pie_dataset_gen.aggregate_predictions"):
        run_stage(stage, f"--workdir={workdir}")
    result = run_stage("pie.report.build", f"--workdir={workdir}", "--format=md")
    assert "report written" in result.stdout
    with open(os.path.join(workdir, "report", "flags.txt")) as handle:
        assert "--format=md" in handle.read()
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    manifest = records.read_manifest(workdir)
    variants = sections.variant_table(manifest)
    assert list(summary_rows(page)) == list(variants["key"])
    found = page_sections(page)
    for name in ("summary", "top1", "significant_classes", "class_delta"):
        assert "not-measured" not in found[name][0], name
        assert "<img" in found[name][1] or "<table" in found[name][1], name
    pie = pd.read_csv(os.path.join(workdir, "pie", "pie.csv"))
    tiles = re.findall(r'alt="eval image (\d+)"', found["pie_grid"][1])
    assert len(tiles) == min(int(pie["is_pie"].sum()), sections.PIE_GRID_SIZE)
    assert set(map(int, tiles)) <= set(pie.loc[pie["is_pie"], "image_id"])
    for name in ("corruptions", "noise_similarity", "cost", "toy", "subgroups"):
        assert "not-measured" in found[name][0], name
    with open(os.path.join(workdir, "report", "summary.md")) as handle:
        table = [line for line in handle.read().splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(variants)


def test_members_without_top1_still_count_and_say_top1_is_missing(synthetic, tmp_path):
    """A hand-written or imported manifest row may leave top1 empty: the variant keeps
    its member count (never "members 0") and the cell says why there is no top-1."""
    workdir = copy_workdir(synthetic[0], tmp_path / "w")
    manifest = pd.read_csv(Workdir(workdir).manifest)
    manifest.loc[manifest["method"] == "magnitude", "top1"] = np.nan
    manifest.loc[manifest["member_id"] == "dense_0_seed0", "top1"] = np.nan
    records.write_csv(Workdir(workdir).manifest, manifest)
    build.build_report(workdir, log=lambda message: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        rows = summary_rows(handle.read())
    for key in ("magnitude_0.5", "magnitude_0.9"):
        assert rows[key][column("members")] == "3"
        assert rows[key][column("top-1 % (mean ± std)")] == (
            f"{sections.DASH} (no top1 in population.csv)")
    dense = manifest[manifest["method"] == "dense"]["top1"].dropna().to_numpy()
    assert rows["dense_0"][column("members")] == "3"
    assert rows["dense_0"][column("top-1 % (mean ± std)")] == (
        f"{100 * dense.mean():.1f} ± {100 * dense.std(ddof=1):.1f}")


def test_toy_figures_are_embedded_only_as_the_toy_study_listed_them(tmp_path):
    """A PNG dropped in by hand, a listed PNG replaced by another one and a listed
    PNG replaced by a link are left out, each named in the page and in the log; the
    figure as written is embedded."""
    import base64
    workdir = make_workdir(str(tmp_path / "w"))
    toy = tmp_path / "w" / "toy"
    _toy_figure(str(toy / "accuracy_moons.png"), (1, 2, 3))
    _toy_figure(str(toy / "boundaries_circles.png"), (4, 5, 6))
    written = os.path.getsize(toy / "boundaries_circles.png")
    Image.new("RGB", (40, 30), (7, 8, 9)).save(toy / "dropped.png")  # not listed
    Image.new("RGB", (40, 30), (9, 9, 9)).save(toy / "boundaries_circles.png")  # replaced
    now = os.path.getsize(toy / "boundaries_circles.png")
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "outside.png")
    os.remove(toy / "accuracy_moons.png")
    os.symlink(tmp_path / "outside.png", toy / "accuracy_moons.png")
    # A stamp naming a file outside W/toy, with its true digest, reaches nothing.
    stamp = toy / ".toy_experiment.stamp.json"
    content = records.read_stamp(str(stamp))
    content["outputs"]["../../outside.png"] = records.file_record(str(tmp_path / "outside.png"))
    records.write_json(str(stamp), content)
    lines = []
    build.build_report(workdir, fmt="html", log=lines.append)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = html.unescape(handle.read())
    embedded = set(re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page))
    for name in ("dropped.png", "boundaries_circles.png"):
        assert base64.b64encode((toy / name).read_bytes()).decode("ascii") not in embedded
    assert base64.b64encode((tmp_path / "outside.png").read_bytes()).decode(
        "ascii") not in embedded
    assert base64.b64encode((toy / "boundaries_moons.png").read_bytes()).decode(
        "ascii") in embedded
    change = f"now {now} bytes" if now != written else "now another SHA-256, same size"
    expected = [
        "toy/boundaries_circles.png is not a PNG file of the toy study: left out (it is not "
        f"the file written ({written} bytes; {change}): rerun pie.stages.toy_experiment)",
        "toy/accuracy_moons.png is not a PNG file of the toy study: left out (it is a link, "
        "not the file written: rerun pie.stages.toy_experiment)",
        "toy/dropped.png is not a PNG file of the toy study: left out (it is not listed in "
        "the toy study's stamp)"]
    for text in expected:
        assert text in page
        assert any(text in line for line in lines)


def test_a_toy_table_the_toy_study_does_not_list_is_refused(tmp_path):
    workdir = make_workdir(str(tmp_path / "w"))
    path = os.path.join(workdir, "toy", "results.csv")
    records.forget_written(path)
    with pytest.raises(records.ContractError) as caught:
        build.build_report(workdir, fmt="html", log=lambda message: None)
    assert str(caught.value) == (
        f"{path} is not listed in {os.path.join(workdir, 'toy', '.toy_experiment.stamp.json')}"
        ": only files pie.stages.toy_experiment wrote are read; rerun "
        "pie.stages.toy_experiment")


def test_a_stage_table_dropped_into_the_workdir_by_hand_is_refused(tmp_path):
    """Every stage table the report reads must be listed in its writer's stamp: a
    pie_summary.csv put there by hand (no record) is not shown as a measurement."""
    workdir = make_workdir(str(tmp_path / "w"))
    path = os.path.join(workdir, "pie", "pie_summary.csv")
    frame = pd.read_csv(path)
    os.remove(path)
    records.forget_written(path)
    frame.to_csv(path, index=False)  # the same numbers, but not what the stage wrote
    with pytest.raises(records.ContractError) as caught:
        build.build_report(workdir, fmt="html", log=lambda message: None)
    assert str(caught.value) == (
        f"{path} is not listed in "
        f"{os.path.join(workdir, 'pie', '.aggregate_predictions.stamp.json')}: only files "
        "pie_dataset_gen.aggregate_predictions wrote are read; rerun "
        "pie_dataset_gen.aggregate_predictions")


def test_findings_beside_their_noise_floor_in_cards_and_words(synthetic):
    workdir, page = synthetic
    body = html.unescape(page_sections(page)["summary"][1])
    floor = pd.read_csv(Workdir(workdir).file("noise_floor"))
    pies = floor[(floor["sparsity"] == 0.9) & (floor["measure"] == "pie_share")].iloc[0]
    # The card of the most compressed variant: 'PIEs 4.0% · noise floor 1.6%'.
    assert (f"PIEs {100 * pies['variant_value']:.1f}% · noise floor "
            f"{100 * pies['floor_mean']:.1f}%") in body
    assert "above the noise floor (95th percentile" in body
    # In words: only magnitude 0.9's PIE share is above its floor.
    assert ("above the floor's 95th percentile: magnitude 0.9: PIEs. Within what seed noise "
            "alone shows: magnitude 0.5: PIEs, hurt, helped") in body
    # 3 members a population: little power, said plainly.
    assert "Populations of fewer than 5 members (dense: 3, magnitude 0.5: 3" in body
