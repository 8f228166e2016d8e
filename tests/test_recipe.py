"""One recipe per population (pie.compress.recipes): recorded, checked, refused, shown."""
import dataclasses
import hashlib
import os

import pandas as pd
import pytest

from conftest import error_lines, run_stage
from pie.analysis import stage_io
from pie.compress import config as config_module
from pie.compress import methods, recipes
from pie.compress.config import TrainConfig
from pie.io import errors, records
from pie.io.workdir import Workdir

MLP_FLAGS = ["--dataset=digits", "--model=mlp", "--width=8", "--sparsities=0", "--seeds=1",
             "--epochs=1", "--batch_size=64"]


def _settings(**changes):
    config = TrainConfig(workdir="unused", **changes)
    return recipes.member_settings(config, "magnitude")


def _meta(workdir, member_id):
    manifest = records.read_manifest(workdir).set_index("member_id")
    return records.read_json(Workdir(workdir).member_file(manifest.loc[member_id, "path"],
                                                          "meta"))


def _listing(workdir):
    """Every file of the workdir with its bytes' digest."""
    found = {}
    for folder, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, workdir)] = hashlib.sha256(handle.read()).hexdigest()
    return found


# ------------------------------------------------------------------ the field list


def test_every_train_flag_is_classified_once():
    groups = (config_module.RECIPE_FIELDS, config_module.PRUNED_RECIPE_FIELDS,
              config_module.METHOD_OPTION_FIELDS, config_module.EXECUTION_FIELDS,
              config_module.RUN_FIELDS)
    named = [name for group in groups for name in group]
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    assert len(named) == len(set(named))


def test_method_options_are_the_methods_own():
    declared = {name for method in methods.registered() for name in method.option_fields}
    assert declared == set(config_module.METHOD_OPTION_FIELDS)


def test_execution_settings_leave_the_digest_alone():
    base = recipes.digest(_settings())
    for changes in ({"workers": 2}, {"threads": 1}, {"steps_per_execution": 1},
                    {"eval_batch_size": 32}, {"share_graphs": False}, {"jit_compile": True},
                    {"seeds": 5}, {"sparsities": "0,0.7"}, {"shard": "1/2"}):
        assert recipes.digest(_settings(**changes)) == base, changes
    for changes in ({"epochs": 3}, {"model": "mlp"}, {"batch_size": 32},
                    {"learning_rate": 0.01}, {"protocol": "from_dense"}, {"power": 2.0}):
        assert recipes.digest(_settings(**changes)) != base, changes


def test_dense_recipe_has_no_method_options():
    config = TrainConfig(workdir="unused", method="wt", clusters=4)
    dense = recipes.member_settings(config, methods.DENSE)
    assert "method" not in dense and "protocol" not in dense
    # A wt run and a magnitude run give the dense population one recipe.
    other = TrainConfig(workdir="unused", method="magnitude", protocol="from_dense")
    assert recipes.digest(dense) == recipes.digest(recipes.member_settings(other, "dense"))
    cluster = recipes.member_settings(config, "cluster")
    assert cluster["clusters"] == 4 and "m_by_n" not in cluster


def test_lr_decay_epochs_as_parsed():
    spaced = _settings(lr_schedule="step", lr_decay_epochs="1, 2")
    assert recipes.digest(spaced) == recipes.digest(
        _settings(lr_schedule="step", lr_decay_epochs="1,2"))


def test_words():
    text = recipes.words(_settings(model="small_cnn", dataset="mnist5k", epochs=12))
    assert text.startswith("small_cnn, mnist5k, 12 epochs, batch 64, adam lr 0.001")
    assert "magnitude" in text and "polynomial prune schedule" in text
    assert recipes.words(None) == "recipe not recorded"
    assert recipes.words(recipes.imported_settings("digits", "ext", 0.5)) == (
        "imported files (ext at sparsity 0.5, digits)")


# ------------------------------------------------------------------ the manifest


def _row(member_id, recipe=None, method="dense", sparsity=0.0, seed=0):
    row = {"member_id": member_id, "method": method, "sparsity": sparsity,
           "measured_sparsity": sparsity, "seed": seed, "dataset": "toy", "model": "mlp",
           "top1": 0.5, "path": member_id, "model_file": f"{member_id}/model.keras"}
    if recipe is not None:
        row["recipe"] = recipe
    return row


def test_analysis_refuses_a_population_of_two_recipes(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a", "0123456789ab"),
                                        _row("b", "1234e5678901", seed=1)])
    with pytest.raises(records.ContractError) as caught:
        stage_io.population_manifest(workdir)
    assert str(caught.value) == (
        f"{Workdir(workdir).manifest}: population dense_0 mixes 2 training recipes "
        "(0123456789ab, 1234e5678901): its members were not trained alike (a hand-merged or "
        "imported workdir?); keep one recipe per population")


def test_unknown_recipes_are_not_refused(tmp_path):
    workdir = str(tmp_path)
    # An old manifest (no recipe column), then a member with one: unknown is not different.
    records.add_manifest_rows(workdir, [_row("a")])
    assert "recipe" not in stage_io.population_manifest(workdir).columns
    records.add_manifest_rows(workdir, [_row("b", "0123456789ab", seed=1),
                                        _row("c", "fedcba987654", method="wt", sparsity=0.5)])
    manifest = stage_io.population_manifest(workdir)
    assert manifest["recipe"].fillna("").tolist() == ["", "0123456789ab", "fedcba987654"]
    assert recipes.recipes(workdir) == {"dense_0": None, "wt_0.5": None}


def test_a_digest_that_looks_like_a_number_stays_text(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a", "000000001e10")])
    assert records.read_manifest(workdir)["recipe"].tolist() == ["000000001e10"]


def test_a_recipe_that_is_no_digest_is_refused(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a")])
    path = Workdir(workdir).manifest
    frame = pd.read_csv(path)
    frame["recipe"] = ["<b>x</b>"]
    frame.to_csv(path, index=False)
    with pytest.raises(records.ContractError, match=r"row 1 \(member_id 'a'\): recipe "
                       r"'<b>x</b>' is not a recipe digest \(12 hex digits, or empty when "
                       r"unknown\)"):
        records.read_manifest(workdir)


# ------------------------------------------------------------------ training runs


@pytest.fixture(scope="module")
def mlp_workdir(tmp_path_factory):
    from save_checkpoint import train
    workdir = str(tmp_path_factory.mktemp("recipe") / "w")
    train.run(workdir=workdir, dataset="digits", model="mlp", width=8, sparsities=[0],
              seeds=1, epochs=1, batch_size=64)
    return workdir


def test_members_record_their_recipe(mlp_workdir):
    manifest = records.read_manifest(mlp_workdir)
    meta = _meta(mlp_workdir, "dense_0_seed0")
    assert meta["recipe"] == manifest["recipe"].iloc[0] == recipes.digest(meta["recipe_settings"])
    assert meta["recipe_settings"]["model"] == "mlp"
    assert meta["recipe_settings"]["augment"] == "none"  # resolved, as trained
    assert meta["execution"]["workers"] == 1 and "workers" not in meta["recipe_settings"]
    assert recipes.recipes(mlp_workdir) == {"dense_0": meta["recipe_settings"]}


def test_another_model_is_refused_and_nothing_written(mlp_workdir):
    before = _listing(mlp_workdir)
    flags = [f for f in MLP_FLAGS if not f.startswith(("--model", "--seeds"))]
    result = run_stage("save_checkpoint.train", f"--workdir={mlp_workdir}", *flags,
                       "--model=small_cnn", "--seeds=2", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: population dense_0 of {Workdir(mlp_workdir).manifest} was trained with "
        "another recipe: --model=mlp there, --model=small_cnn in this run; train this recipe "
        "into another workdir, or rerun with the population's flags"]
    assert _listing(mlp_workdir) == before


def test_a_study_rerun_with_other_epochs_is_refused(mlp_workdir):
    # As `bash run.sh --epochs=2 ...` on the workdir: the study, which follows its
    # workdir (pie.stages.study_workdir), refuses the flag before any stage runs, one
    # line naming both values; nothing is written.
    before = _listing(mlp_workdir)
    flags = [f for f in MLP_FLAGS if not f.startswith("--epochs")]
    result = run_stage("pie.stages.study", f"--workdir={mlp_workdir}", *flags, "--epochs=2",
                       "--extra_methods=none", check=False)
    assert result.returncode == 2
    source = os.path.join("checkpoints", "dense", "sparsity_0", "seed_0", "flags.txt")
    assert error_lines(result) == [
        f"error: --epochs=2 contradicts --workdir={mlp_workdir}: its population has "
        f"--epochs=1 ({source}); leave --epochs out or use another --workdir"]
    assert _listing(mlp_workdir) == before


def test_speed_flags_resume_and_join_the_population(mlp_workdir):
    # (--threads and --workers are set before TensorFlow starts, so not in this
    # process: test_execution_settings_leave_the_digest_alone holds them.)
    from save_checkpoint import train
    train.run(workdir=mlp_workdir, dataset="digits", model="mlp", width=8, sparsities=[0],
              seeds=2, epochs=1, batch_size=64, steps_per_execution=1, eval_batch_size=32,
              share_graphs=False)
    manifest = records.read_manifest(mlp_workdir)
    assert list(manifest["member_id"]) == ["dense_0_seed0", "dense_0_seed1"]
    assert manifest["recipe"].nunique() == 1


def test_made_from_parent_carries_the_parents_recipe(mlp_workdir):
    from save_checkpoint import train
    train.run(workdir=mlp_workdir, dataset="digits", model="mlp", width=8, method="m_by_n",
              sparsities=[0.5], seeds=1, epochs=1, batch_size=64, finetune_epochs=1)
    manifest = records.read_manifest(mlp_workdir).set_index("member_id")
    meta = _meta(mlp_workdir, "m_by_n_0.5_seed0")
    settings = meta["recipe_settings"]
    assert settings["parent_recipe"] == manifest.loc["dense_0_seed0", "recipe"]
    assert settings["method"] == "m_by_n" and settings["m_by_n"] == "2,4"
    assert manifest.loc["m_by_n_0.5_seed0", "recipe"] == recipes.digest(settings)
    # Other fine-tuning for the same population is refused.
    with pytest.raises(errors.UsageError, match=r"population m_by_n_0.5 .* --finetune_epochs=1 "
                       r"there, --finetune_epochs=2 in this run"):
        train.run(workdir=mlp_workdir, dataset="digits", model="mlp", width=8,
                  method="m_by_n", sparsities=[0.5], seeds=1, epochs=1, batch_size=64,
                  finetune_epochs=2)


def test_report_header_lists_recipes(mlp_workdir):
    from pie.report import sections
    context = sections.Context(mlp_workdir)
    words = dict(context.recipe_words)
    assert words["dense"].startswith("mlp width 8, digits, 1 epochs, batch 64, adam lr 0.001")
    assert "m_by_n (m_by_n 2,4)" in words["m_by_n 0.5"]
    assert f"parent recipe {_meta(mlp_workdir, 'dense_0_seed0')['recipe']}" in words["m_by_n 0.5"]


def test_imported_members_record_what_is_known(mlp_workdir, tmp_path):
    from save_checkpoint import import_members
    manifest = records.read_manifest(mlp_workdir).set_index("member_id")
    model = os.path.join(mlp_workdir, manifest.loc["dense_0_seed0", "model_file"])
    workdir = str(tmp_path / "imported")
    import_members.run(workdir=workdir, models=model, method="ext", sparsity=0.0,
                       dataset="digits", allow_chance=True)
    meta = _meta(workdir, "ext_0_seed0")
    assert meta["recipe_settings"] == recipes.imported_settings("digits", "ext", 0.0)
    assert meta["recipe"] == recipes.digest(meta["recipe_settings"])
    with open(model, "rb") as handle:
        assert meta["source_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert recipes.recipes(workdir) == {"ext_0": recipes.imported_settings("digits", "ext", 0.0)}
