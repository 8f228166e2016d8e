"""Tests of pie.stages.toy_experiment: masked evaluation, a tiny run, resume."""
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pie.compress import criteria as C
from pie.stages import toy_experiment as T

TINY = dict(dataset="moons", width=16, seeds=2, samples_per_class=(1, 3), epochs=1,
            train_size=200, test_size=100, rank_k=(125, 500))


@pytest.mark.parametrize("removed_first", [2, 12])
def test_masked_mlp_matches_the_masked_model(removed_first):
    model = T.build_network(16, 3)
    rng = np.random.default_rng(removed_first)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    x = rng.normal(size=(40, 2)).astype(np.float32)
    mask = {"hidden_1": np.arange(16) >= removed_first,  # both evaluation branches
            "hidden_2": rng.random(16) > 0.3, "hidden_3": rng.random(16) > 0.5}
    evaluator = T.MaskedMLP(model, x)
    np.testing.assert_allclose(evaluator.logits(), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    C.apply_unit_mask(model, mask)
    np.testing.assert_allclose(evaluator.logits(mask), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_draw_reference_takes_n_per_class_deterministically():
    labels = np.repeat([0, 1, 2, 3], 25)
    first = T.draw_reference(labels, 5, seed=3)
    np.testing.assert_array_equal(np.bincount(labels[first]), [5, 5, 5, 5])
    assert len(np.unique(first)) == 20
    np.testing.assert_array_equal(first, T.draw_reference(labels, 5, seed=3))
    assert not np.array_equal(first, T.draw_reference(labels, 5, seed=4))


def test_config_validation():
    with pytest.raises(ValueError, match=r"^samples_per_class must be integers in \[1, 100\] "
                                         r"\(training points per class\), got \[1, 101\]$"):
        T.ToyConfig(train_size=200, samples_per_class=(1, 101)).resolved()
    with pytest.raises(ValueError, match=r"^train_size must be a multiple of 4 for spirals "
                                         r"\(balanced classes\), got 2002$"):
        T.ToyConfig(dataset="spirals", train_size=2002).resolved()
    with pytest.raises(ValueError, match=r"^unknown criterion 'saliency'; allowed: "):
        T.ToyConfig(criteria=("lrp", "saliency")).resolved()
    config = T.ToyConfig(dataset="spirals").resolved()
    assert (config.train_size, config.epochs) == (4000, T.DEFAULT_EPOCHS["spirals"])
    assert T.ToyConfig(width=16).resolved().scaled_rank_k == (2, 4, 8, 16)


def test_tiny_run_outputs_and_resume(tmp_path):
    out = str(tmp_path / "w" / "toy")  # the study's folder of workdir w
    lines = []
    results = T.run_experiment(T.ToyConfig(**TINY), out, log=lines.append, flags_text="x\n")
    frame = pd.read_csv(os.path.join(out, "results.csv"))
    assert list(frame.columns) == ["dataset", "criterion", "samples_per_class", "seed",
                                   "scenario", "stage", "accuracy"]
    assert len(frame) == 4 * 2 * 2 * 2 * 2 and len(results) == len(frame)
    assert set(frame["scenario"]) == {"train", "noisy_test"}
    assert set(frame["stage"]) == {"before", "after"}
    # One unpruned network per seed: the same "before" accuracy for every criterion and n.
    before = frame[frame["stage"] == "before"].groupby(["seed", "scenario"])["accuracy"]
    assert (before.nunique() == 1).all()
    # A data-free criterion gives the same pruned network for every n.
    weight = frame[(frame["criterion"] == "weight") & (frame["stage"] == "after")]
    assert (weight.groupby(["seed", "scenario"])["accuracy"].nunique() == 1).all()
    ranks = pd.read_csv(os.path.join(out, "rank_analysis.csv"))
    assert list(ranks.columns) == T.RANK_COLUMNS
    assert len(ranks) == 6 * 2 * 2 * (2 + 2 * 2)  # pairs x n x seeds x (2 corr + 2 overlaps x 2 k)
    assert sorted(ranks["k"].dropna().unique()) == [2, 8]
    for name in ("accuracy_moons.png", "boundaries_moons.png", "summary.csv", "flags.txt"):
        assert os.path.exists(os.path.join(out, name))
    # The stage's stamp lists every table (rows, digest) and figure (digest) it wrote,
    # and the report embeds exactly those figures.
    with open(os.path.join(out, ".toy_experiment.stamp.json")) as handle:
        stamp = json.load(handle)
    assert stamp["stage"] == "pie.stages.toy_experiment"
    for name in ("results.csv", "rank_analysis.csv", "summary.csv", "accuracy_moons.png",
                 "boundaries_moons.png"):
        with open(os.path.join(out, name), "rb") as handle:
            data = handle.read()
        record = stamp["outputs"][name]
        assert (record["bytes"], record["sha256"]) == (len(data),
                                                       hashlib.sha256(data).hexdigest())
        if name.endswith(".csv"):
            assert record["rows"] == len(pd.read_csv(os.path.join(out, name)))
    from pie.report import sections
    figures = sections.toy_figures(str(tmp_path / "w"))
    assert [(os.path.basename(path), problem) for path, _, problem in figures] == [
        ("boundaries_moons.png", None), ("accuracy_moons.png", None)]
    for path, content, _ in figures:
        with open(path, "rb") as handle:
            assert content == handle.read()

    seed_file = os.path.join(out, "seeds", "results_seed00001.csv")
    stamp = os.path.getmtime(seed_file)
    lines.clear()
    T.run_experiment(T.ToyConfig(**dict(TINY, seeds=3)), out, log=lines.append)
    assert lines[0] == "moons: 2 of 3 seeds done, 1 to run"
    assert os.path.getmtime(seed_file) == stamp
    assert len(pd.read_csv(os.path.join(out, "results.csv"))) == 3 * 32

    # Seed 1 alone (seed 0 marked done), with a fresh trainer, reproduces its rows.
    alone = str(tmp_path / "alone")
    os.makedirs(os.path.join(alone, "seeds"))
    for name in ("results_seed00000.csv", "rank_seed00000.csv"):
        shutil.copy(os.path.join(out, "seeds", name), os.path.join(alone, "seeds", name))
    T.run_experiment(T.ToyConfig(**dict(TINY, seeds=2, plots=False)), alone, log=lambda _: None)
    np.testing.assert_array_equal(pd.read_csv(seed_file)["accuracy"],
                                  pd.read_csv(os.path.join(alone, "seeds",
                                                           "results_seed00001.csv"))["accuracy"])

    with pytest.raises(ValueError, match=r"holds a run with other settings \(width\); use a "
                                         r"new --out or the same settings$"):
        T.run_experiment(T.ToyConfig(**dict(TINY, width=8)), out, log=lambda _: None)


def test_cli_bad_flag_exits_2_without_output(tmp_path):
    out = tmp_path / "cli"
    completed = subprocess.run(
        [sys.executable, "-m", "pie.stages.toy_experiment", "--criteria=lrp,nope",
         f"--out={out}"], capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: unknown criterion 'nope'; allowed: filter_l1, grad, lrp, taylor, weight")
    assert not out.exists()


def test_fewer_seeds_rebuild_the_summaries(tmp_path):
    out = str(tmp_path / "toy")
    config = T.ToyConfig(dataset="moons", criteria=("weight",),
                                      samples_per_class=(2,), seeds=2, width=8, epochs=1,
                                      train_size=40, test_size=20, rank_k=(2,), plots=False)
    T.run_experiment(config, out, log=lambda message: None)
    fewer = dataclasses.replace(config, seeds=1)
    results = T.run_experiment(fewer, out, log=lambda message: None)
    assert set(results["seed"]) == {0}
    assert set(pd.read_csv(os.path.join(out, "results.csv"))["seed"]) == {0}
