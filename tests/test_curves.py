"""Training curves (pie.report.curves): history.csv rows read per member, mean and band
over seeds checked against a direct computation, files outside the workdir refused."""
import os

import numpy as np
import pandas as pd
import pytest

from pie.compress import history
from pie.report import curves, plots, sections


def _member(workdir, method, sparsity, seed, losses):
    relpath = os.path.join("checkpoints", method, f"sparsity_{sparsity:g}", f"seed_{seed}")
    os.makedirs(os.path.join(workdir, relpath))
    epochs = np.arange(1, len(losses) + 1)
    pd.DataFrame({"epoch": epochs, "step": 10 * epochs, "loss": losses,
                  "accuracy": 1 - np.asarray(losses) / 3, "learning_rate": 0.1 / epochs,
                  "sparsity": sparsity, "wall_time_s": 0.5}).to_csv(
        os.path.join(workdir, relpath, "history.csv"), index=False)
    return {"member_id": f"{method}_{sparsity:g}_seed{seed}", "method": method,
            "sparsity": sparsity, "seed": seed, "path": relpath}


def test_population_curves_are_mean_and_band_over_seeds(tmp_path):
    workdir = str(tmp_path)
    rng = np.random.default_rng(3)
    losses = {(m, s, k): rng.uniform(0.1, 2.0, 4) for m, s in (("dense", 0.0),
                                                                ("magnitude", 0.5))
              for k in range(3)}
    manifest = pd.DataFrame([_member(workdir, m, s, k, v) for (m, s, k), v in losses.items()])
    # A member whose history is a link leading out of the workdir is not read.
    outside = tmp_path.parent / f"{tmp_path.name}_outside.csv"
    outside.write_text("epoch,step,loss,accuracy,learning_rate,sparsity,wall_time_s\n")
    linked = os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_9")
    os.makedirs(linked)
    os.symlink(outside, os.path.join(linked, "history.csv"))
    manifest = pd.concat([manifest, pd.DataFrame([{
        "member_id": "dense_0_seed9", "method": "dense", "sparsity": 0.0, "seed": 9,
        "path": os.path.join("checkpoints", "dense", "sparsity_0", "seed_9")}])])
    rows, missing = curves.read_histories(workdir, manifest)
    assert missing == 1 and len(rows) == 6 * 4
    table = curves.population_curves(rows)
    for method, sparsity in (("dense", 0.0), ("magnitude", 0.5)):
        stacked = np.stack([losses[(method, sparsity, k)] for k in range(3)])
        got = table.loc[(method, sparsity)]
        np.testing.assert_allclose(got[("loss", "mean")], stacked.mean(axis=0))
        np.testing.assert_allclose(got[("loss", "min")], stacked.min(axis=0))
        np.testing.assert_allclose(got[("loss", "max")], stacked.max(axis=0))
        assert (got[("loss", "count")] == 3).all()
    png = curves.training_curves(rows, plots.method_colors(["dense", "magnitude"]))
    assert png.startswith(sections.PNG_MAGIC)
    variants = sections.variant_table(manifest.assign(top1=0.5, model="m", dataset="d"))
    final = {r["label"]: r for r in curves.final_epochs(rows, variants)}
    assert final["magnitude 0.5"]["loss"] == pytest.approx(
        np.mean([losses[("magnitude", 0.5, k)][-1] for k in range(3)]))
    assert final["dense"]["with_history"] == 3 and final["dense"]["members"] == 4


def test_trained_members_have_histories(tiny_population):
    from pie.io import records
    manifest = records.read_manifest(tiny_population)
    rows, missing = curves.read_histories(tiny_population, manifest)
    assert missing == 0 and len(rows) == len(manifest)  # one epoch each
    assert list(rows.columns[:len(history.COLUMNS)]) == list(history.COLUMNS)
    # The measured sparsity at the epoch's end: the pruned members' masks have zeros.
    pruned = rows[rows["method"] == "magnitude"]
    assert (pruned["sparsity"] > 0).all() and (pruned["target_sparsity"] == 0.5).all()
    assert (rows[rows["method"] == "dense"]["sparsity"] == 0).all()
