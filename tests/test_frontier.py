"""The cost-versus-forgetting frontier (pie.analysis.frontier) and its report section.

A hand-made population of variants with chosen sizes and forgetting values (ties,
a dominated variant, a variant without a size) is checked against a direct,
pairwise computation of the Pareto set and of the best variant at each budget;
missing inputs give NaN columns and the reason; the report writes the same table
to frontier.csv.
"""
import html
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pie import commands
from pie.analysis import frontier, robustness
from pie.io import records
from pie.io.workdir import Workdir
from pie.report import build
from test_pie_explorer import HURT, make_workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_front(cost, forgetting):
    """On the front: placed, and no other placed variant at least as small and forgetting
    at most as much, strictly better in one (pairwise loops)."""
    placed = [np.isfinite(c) and np.isfinite(f) for c, f in zip(cost, forgetting)]
    front = []
    for v in range(len(cost)):
        dominated = any(placed[u] and u != v and cost[u] <= cost[v]
                        and forgetting[u] <= forgetting[v]
                        and (cost[u] < cost[v] or forgetting[u] < forgetting[v])
                        for u in range(len(cost)))
        front.append(placed[v] and not dominated)
    return front


def brute_best(cost, forgetting, budget):
    """Among placed variants no larger than `budget`: least forgetting, then smaller,
    then first; -1 when none fits."""
    fitting = [u for u in range(len(cost)) if np.isfinite(cost[u])
               and np.isfinite(forgetting[u]) and cost[u] <= budget]
    return min(fitting, key=lambda u: (forgetting[u], cost[u], u)) if fitting else -1


# (method, sparsity, gzip bytes of each of 2 members, top-1 of each, classes hurt,
#  PIE share, excess error per corruption row)
POPULATION = [
    ("dense", 0.0, (1000, 1000), (0.90, 0.92), None, None, None),
    ("magnitude", 0.5, (600, 600), (0.89, 0.89), 2, 0.10, (1.0, 3.0)),
    ("magnitude", 0.9, (300, 300), (0.80, 0.82), 5, 0.30, (4.0, 4.0)),
    # Same size and same top-1 drop as magnitude 0.5: a tie, both stay on the front.
    ("m_by_n", 0.5, (550, 650), (0.88, 0.90), 2, 0.05, (1.0, 1.0)),
    # Larger than magnitude 0.5 and forgets more on every measure: dominated.
    ("cluster", 0.0, (700, 700), (0.85, 0.85), 3, 0.20, (2.5, 2.5)),
    # No cost row: not placed.
    ("qat", 0.0, None, (0.905, 0.905), 0, 0.01, (0.1, 0.1)),
]


def population_tables():
    manifest, cost, tests, pies, excess = [], [], [], [], []
    for method, sparsity, sizes, top1s, hurt, share, shifts in POPULATION:
        key = records.variant_key(method, sparsity)
        for seed, top1 in enumerate(top1s):
            member_id = f"{key}_seed{seed}"
            manifest.append(dict(member_id=member_id, method=method, sparsity=sparsity,
                                 seed=seed, top1=top1))
            if sizes is not None:
                cost.append(dict(member_id=member_id, gzip_bytes=sizes[seed],
                                 latency_ms_batch1=np.nan if method == "cluster" else 0.5))
        if hurt is not None:
            tests.append(dict(method=method, sparsity=sparsity, n_classes_hurt=hurt,
                              baseline_mean_top1=0.91, variant_mean_top1=np.mean(top1s)))
            pies.append(dict(method=method, sparsity=sparsity, pie_fraction=share))
            for distribution, value in zip(("fog/3", "gaussian_noise/1"), shifts):
                excess.append(dict(method=method, sparsity=sparsity, distribution=distribution,
                                   excess_error_mean=value))
            # A natural shift is not a corruption: never in the mean.
            excess.append(dict(method=method, sparsity=sparsity, distribution="imagenet_a",
                               excess_error_mean=99.0))
    return (pd.DataFrame(manifest), pd.DataFrame(cost), pd.DataFrame(tests),
            pd.DataFrame(pies), pd.DataFrame(excess))


@pytest.fixture(scope="module")
def table():
    manifest, cost, tests, pies, excess = population_tables()
    result, reasons = frontier.frontier_table(manifest, cost, tests, pies, excess)
    return result, reasons


def test_values_per_variant(table):
    result, _ = table
    result = result.set_index("variant")
    assert list(result.index) == ["dense_0", "cluster_0", "m_by_n_0.5", "magnitude_0.5",
                                  "magnitude_0.9", "qat_0"]
    assert list(result.columns) == [c for c in frontier.FRONTIER_COLUMNS if c != "variant"]
    for method, sparsity, sizes, top1s, hurt, share, shifts in POPULATION:
        row = result.loc[records.variant_key(method, sparsity)]
        assert row["gzip_bytes"] == pytest.approx(np.mean(sizes)) if sizes else np.isnan(
            row["gzip_bytes"])
        assert row["top1_drop"] == pytest.approx(0.91 - np.mean(top1s))
        if method == "dense":  # the reference forgets nothing
            assert (row["n_classes_hurt"], row["pie_fraction"], row["excess_error_mean"]) == (
                0, 0, 0)
        else:
            assert row["n_classes_hurt"] == hurt and row["pie_fraction"] == share
            assert row["excess_error_mean"] == pytest.approx(np.mean(shifts))
    assert np.isnan(result.loc["cluster_0", "latency_ms_batch1"])
    assert result.loc["qat_0", "not_measured"] == (
        "gzip_bytes: quantization/cost.csv has no value for the variant; "
        "latency_ms_batch1: quantization/cost.csv has no value for the variant")


def test_front_and_budget_match_a_direct_computation(table):
    result, _ = table
    cost = result["gzip_bytes"].tolist()
    for measure in frontier.MEASURES:
        values = result[measure].tolist()
        flags = result[frontier.front_column(measure)]
        expected = brute_front(cost, values)
        assert [bool(f) if not pd.isna(f) else False for f in flags] == expected, measure
        assert flags.isna().tolist() == [not np.isfinite(c) for c in cost]
        best = [result["variant"].iloc[i] if (i := brute_best(cost, values, c)) >= 0 else ""
                for c in cost]
        assert result[frontier.budget_column(measure)].tolist() == best, measure
    # The cases the population was made for, on the top-1 drop.
    front = dict(zip(result["variant"], result[frontier.front_column("top1_drop")]))
    assert front["m_by_n_0.5"] and front["magnitude_0.5"]  # equal size and drop: a tie
    assert not pd.isna(front["cluster_0"]) and not front["cluster_0"]  # dominated
    assert front["magnitude_0.9"]
    assert pd.isna(front["qat_0"])  # no size: not placed


def test_front_and_budget_on_random_populations_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        cost = rng.integers(1, 5, n).astype(float)  # few values: many ties
        forgetting = rng.integers(0, 4, n).astype(float)
        cost[rng.random(n) < 0.15] = np.nan
        forgetting[rng.random(n) < 0.15] = np.nan
        on_front, placed = frontier.pareto_front(cost, forgetting)
        assert on_front.tolist() == brute_front(cost, forgetting)
        assert placed.tolist() == (np.isfinite(cost) & np.isfinite(forgetting)).tolist()
        budgets = np.arange(0, 6, dtype=float)
        best = frontier.best_within_budget(cost, forgetting, budgets)
        assert best.tolist() == [brute_best(cost, forgetting, b) for b in budgets]
        # The best at any budget is on the front.
        assert all(on_front[i] for i in best if i >= 0)


def test_budget_table_names_the_least_forgetting_variant_per_size(table):
    result, _ = table
    budgets = frontier.budget_table(result, "n_classes_hurt")
    # Sizes 300, 600 (m_by_n and magnitude 0.5 tie), 700, 1000.
    assert budgets["budget_bytes"].tolist() == [300, 600, 700, 1000]
    assert budgets["variant"].tolist() == ["magnitude_0.9", "m_by_n_0.5", "m_by_n_0.5",
                                           "dense_0"]
    with pytest.raises(ValueError, match="measure 'size' is not one of"):
        frontier.budget_table(result, "size")


def test_missing_inputs_give_nan_and_the_reason():
    manifest, cost, tests, pies, excess = population_tables()
    result, reasons = frontier.frontier_table(
        manifest, cost=None, class_tests=tests, pies=None, excess=excess,
        absent={"cost": "no cost stage run"})
    assert result["gzip_bytes"].isna().all() and result["latency_ms_batch1"].isna().all()
    assert result["pie_fraction"].isna().all()
    assert reasons["gzip_bytes"] == "no cost stage run"
    assert reasons["pie_fraction"] == "pie/pie_summary.csv is missing"
    for measure in frontier.MEASURES:  # nothing is placed without sizes
        assert result[frontier.front_column(measure)].isna().all()
        assert (result[frontier.budget_column(measure)] == "").all()
    assert all("gzip_bytes: no cost stage run" in text and
               "pie_fraction: pie/pie_summary.csv is missing" in text
               for text in result["not_measured"])
    # A forgetting measure present for every variant is not in the reasons.
    assert "top1_drop" not in reasons and "n_classes_hurt" not in reasons
    with pytest.raises(ValueError, match=r"absent names unknown inputs \['sizes'\]"):
        frontier.frontier_table(manifest, absent={"sizes": "x"})


def test_top1_falls_back_to_the_class_tests_when_the_manifest_has_none():
    manifest, cost, tests, pies, excess = population_tables()
    manifest.loc[manifest["method"] == "cluster", "top1"] = np.nan
    result, reasons = frontier.frontier_table(manifest, cost, tests, pies, excess)
    row = result.set_index("variant").loc["cluster_0"]
    assert row["top1_drop"] == pytest.approx(0.91 - 0.85)
    result, reasons = frontier.frontier_table(manifest, cost, None, pies, excess)
    assert np.isnan(result.set_index("variant").loc["cluster_0", "top1_drop"])
    assert reasons["top1_drop"] == "no top-1 for the variant in population.csv"


def test_excess_error_prefers_the_stage_mean_row():
    manifest, cost, tests, pies, excess = population_tables()
    stage_mean = pd.DataFrame([dict(method="magnitude", sparsity=0.9,
                                    distribution=robustness.MEAN_CORRUPTION,
                                    excess_error_mean=7.0)])
    result, _ = frontier.frontier_table(manifest, cost, tests, pies,
                                        pd.concat([excess, stage_mean]))
    values = dict(zip(result["variant"], result["excess_error_mean"]))
    assert values["magnitude_0.9"] == 7.0 and values["magnitude_0.5"] == 2.0


def test_the_module_loads_no_tensorflow():
    code = ("import sys, pie.analysis.frontier; "
            "sys.exit(any(m.startswith('tensorflow') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_dominated_by_rejects_vectors_of_two_lengths():
    with pytest.raises(ValueError, match=r"got shapes \(2,\) and \(3,\)"):
        frontier.dominated_by([1, 2], [1, 2, 3])


# ------------------------------------------------------------------------------ report


def test_report_writes_the_table_and_the_section(tmp_path):
    workdir = make_workdir(str(tmp_path / "w"))
    build.build_report(workdir, log=lambda line: None)
    budget_columns = [frontier.budget_column(m) for m in frontier.MEASURES]
    written = pd.read_csv(os.path.join(workdir, "report", "frontier.csv"),
                          keep_default_na=False, na_values=[""],
                          dtype={column: str for column in budget_columns})
    assert list(written.columns) == frontier.FRONTIER_COLUMNS
    wd = Workdir(workdir)
    expected, _ = frontier.frontier_table(
        records.read_manifest(workdir), cost=pd.read_csv(wd.file("cost")),
        class_tests=pd.read_csv(wd.file("tstatistic_summary")),
        pies=pd.read_csv(wd.file("pie_summary")),
        absent={"excess": "x"})
    assert written["variant"].tolist() == expected["variant"].tolist()
    for column in ("gzip_bytes", "top1_drop", "n_classes_hurt", "pie_fraction"):
        np.testing.assert_allclose(written[column], expected[column])
    assert written["n_classes_hurt"].tolist()[1:] == [HURT[k] for k in
                                                      written["variant"].tolist()[1:]]
    for measure in frontier.MEASURES:
        assert written[frontier.budget_column(measure)].fillna("").tolist() == \
            expected[frontier.budget_column(measure)].tolist()
    # No robustness stage ran: the excess error is NaN with the command that makes it.
    assert written["excess_error_mean"].isna().all()
    command = commands.command("robustness").format(W=workdir)
    assert command.endswith(f"python -m robustness_tests.analyze --workdir={workdir}")
    assert all(f"robustness/excess_error.csv is missing (run `{command}`)" in text
               for text in written["not_measured"])
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    section = re.search(r'<section id="frontier" class="section">(.*?)</section>', page,
                        re.S).group(1)
    assert section.count("<img") == 1 and section.count("<table") == 2
    assert "excess error under corruption (points) not measured" in section
    # The page's table names, per variant, the measures whose front it is on.
    shown = {html.unescape(cells[0]): html.unescape(cells[-1]) for cells in (
        re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section))
        if cells}
    for row in written.to_dict("records"):
        fronts = [frontier.MEASURE_LABELS[m] for m in frontier.MEASURES
                  if row[frontier.front_column(m)] is True]
        label = row["method"] if row["sparsity"] == 0 else f"{row['method']} {row['sparsity']:g}"
        assert shown[label] == (", ".join(fronts) or "—")


def test_without_sizes_the_section_is_not_measured_and_the_csv_says_why(tmp_path):
    workdir = make_workdir(str(tmp_path / "w"))
    os.remove(Workdir(workdir).file("cost"))
    build.build_report(workdir, log=lambda line: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    assert re.search(r'<section id="frontier" class="section not-measured">', page)
    written = pd.read_csv(os.path.join(workdir, "report", "frontier.csv"))
    assert written["gzip_bytes"].isna().all()
    assert written["not_measured"].str.contains(
        "quantization/cost.csv is missing").all()
    with pytest.raises(build.ReportError, match="quantization/cost.csv"):
        build.build_report(workdir, strict=True, force=True, log=lambda line: None)


def test_the_brute_force_reference_itself():
    """The reference itself: on a staircase every point is on the front; a point above
    it is not."""
    cost, forgetting = [1, 2, 3, 2.5], [3, 2, 1, 2.5]
    assert brute_front(cost, forgetting) == [True, True, True, False]
    assert [brute_best(cost, forgetting, b) for b in (0, 1, 2.7, 9)] == [-1, 0, 1, 2]
