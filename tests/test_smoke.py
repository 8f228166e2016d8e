"""`pie study --smoke` (pie.stages.smoke): each config's recipe kept, shrunk to fit a few
minutes, on miniature data written in the dataset's own layout; the slow tests run
every config's smoke study end to end (`bash run.sh test -m slow`, CI's second step)."""
import glob
import os

import numpy as np
import pandas as pd
import pytest
from absl import flags

from conftest import ROOT, error_lines, run_stage
from pie.compress import schedules
from pie.data import sources
from pie.io import cli, records
from pie.io.workdir import Workdir
from pie.stages import smoke, study

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))
# The recipe a smoke study keeps exactly as the config gives it.
KEPT = ("model", "method", "protocol", "prune_schedule", "schedule", "power", "optimizer",
        "lr_schedule", "lr_decay_factor", "lr_per_256", "weight_decay",
        "weight_decay_mode", "label_smoothing", "precision", "augment", "extra_methods",
        "quantize_modes", "label_attribute", "group_attributes", "toy_dataset",
        "report_format", "learning_rate")


def config_settings(path, workdir="W"):
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", f"--flagfile={path}", f"--workdir={workdir}"])
    return cli.settings_of(values, "pie.stages.study")


def config(name):
    return os.path.join(ROOT, "configs", name)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_smoke_keeps_the_recipe_and_shrinks_the_rest(path):
    given = config_settings(path)
    shrunk, line = smoke.shrink(given)
    for name in KEPT:
        assert getattr(shrunk, name) == getattr(given, name), name
    assert line.startswith("smoke: data: ") and "\n" not in line
    assert shrunk.seeds == min(given.seeds, 2) and shrunk.epochs == smoke.EPOCHS
    levels = [float(level) for level in shrunk.sparsities.split(",")]
    assert levels[0] == 0 and 2 <= len(levels) <= 3
    assert set(levels) <= {float(level) for level in given.sparsities.split(",")}
    assert shrunk.strategy == "default" and shrunk.tpu is None and shrunk.workers == 1
    assert shrunk.severities.count(",") == 0 and shrunk.corruptions.count(",") <= 1
    # The cost stage times once, without untimed warm-up calls.
    assert study.stage_args(shrunk)["cost"][1:] == ["--repeats=1", "--warmup=0"]
    # Warm-up and a decay step both happen inside the shorter training.
    recipe = schedules.validate(shrunk.lr_schedule, shrunk.warmup_epochs,
                                shrunk.lr_decay_epochs, shrunk.lr_decay_factor,
                                shrunk.weight_decay, shrunk.weight_decay_mode,
                                shrunk.lr_per_256)
    if given.warmup_epochs:
        assert 0 < recipe.warmup_epochs < shrunk.epochs
    if given.lr_schedule == "step":
        assert recipe.warmup_epochs < recipe.decay_epochs[0] < shrunk.epochs
    # What changed is said: every changed flag's old and new value.
    for name in ("seeds", "epochs", "sparsities"):
        if getattr(given, name) != getattr(shrunk, name):
            assert f"{name} {given.serialized(name).split('=', 1)[1]}->" in line
    # The settings serialize as they read (what the training stage is given).
    assert f"--epochs={smoke.EPOCHS}" in study.train_args(shrunk)


def test_the_imagenet_config_gets_the_fixture_and_a_compressed_pruning_schedule():
    given = config_settings(config("hooker_imagenet_resnet50.cfg"))
    shrunk, line = smoke.shrink(given)
    assert shrunk.dataset == "tfrecord:" + os.path.join(Workdir("W").smoke_data_dir,
                                                        "imagenet2012")
    assert "ImageNet-layout TFRecord folder" in line and "32 px" in line
    total = shrunk.steps_per_epoch * shrunk.epochs
    assert shrunk.steps_per_epoch == 16 // smoke.BATCH_SIZE
    # 5,000-8,000 of 32,000 steps, every 500: the same fractions of 12 steps, every
    # step, and at least two mask updates.
    begin = round(5000 / 32000 * total)
    assert (shrunk.begin_step, shrunk.end_step, shrunk.frequency) == (
        begin, max(begin + 2, round(8000 / 32000 * total)), 1)
    assert "begin_step 5000->2" in line and "strategy tpu->default" in line


def test_cifar_and_celeb_a_configs_get_mock_tfds_data_and_small_widths():
    for name, width in (("hooker_cifar10_wrn.cfg", 2), ("celeba_resnet18_blond.cfg", 8)):
        shrunk, line = smoke.shrink(config_settings(config(name)))
        assert shrunk.data_dir == os.path.join(Workdir("W").smoke_data_dir, "tfds")
        assert "mock tensorflow-datasets" in line and shrunk.width == width
    lost, _ = smoke.shrink(config_settings(config("lost_in_pruning_cifar10_resnet20.cfg")))
    assert lost.sparsities == "0,0.75,0.98"  # the cascade keeps two pruning steps
    assert lost.finetune_epochs == smoke.EPOCHS


def test_the_embedded_config_keeps_its_local_data():
    shrunk, line = smoke.shrink(config_settings(config("embedded_mnist5k.cfg")))
    assert (shrunk.dataset, shrunk.data_dir, shrunk.batch_size) == ("mnist5k", None, 64)
    assert line.startswith("smoke: data: mnist5k as given (local data); ")


def test_an_explicit_pruning_schedule_needs_the_training_length():
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", "--workdir=W", "--begin_step=10", "--end_step=20", "--frequency=5"])
    with pytest.raises(cli.UsageError) as raised:
        smoke.shrink(cli.settings_of(values, "pie.stages.study"))
    assert str(raised.value) == ("--smoke compresses --begin_step/--end_step/--frequency "
                                 "only with --steps_per_epoch and --epochs given (the "
                                 "original training's length)")


def test_mock_tfds_data_is_a_prepared_set_with_the_real_features(tmp_path):
    data_dir = str(tmp_path / "tfds")
    smoke.write_mock_tfds("celeb_a", data_dir)
    source = sources.load("celeb_a", data_dir=data_dir, label_attribute="Blond_Hair",
                          group_attributes=["Male", "Young"])
    images, labels, ids = source.eval_arrays()
    assert len(ids) == smoke.MIN_SPLIT_IMAGES and set(labels.tolist()) == {0, 1}
    assert {int(v) for v in source.attributes()["Male"]} == {0, 1}
    assert source.family == "imagenet"  # celeb_a's 218x178 images, as the real set
    smoke.write_mock_tfds("cifar10", str(tmp_path / "c"))
    cifar = sources.load("cifar10", data_dir=str(tmp_path / "c"))
    _, labels, _ = cifar.eval_arrays()
    assert np.bincount(labels).tolist() == [smoke.IMAGES_PER_CLASS] * 10
    assert (cifar.family, cifar.input_shape) == ("cifar", (32, 32, 3))


def test_the_imagenet_fixture_reads_as_a_tfrecord_folder(tmp_path):
    folder = str(tmp_path / "imagenet2012")
    smoke.write_imagenet_layout(folder)
    source = sources.load("tfrecord:" + folder)
    images, labels, _ = source.eval_arrays()
    assert source.num_classes == smoke.FIXTURE_CLASSES
    assert images.shape[1:] == (smoke.FIXTURE_SIDE, smoke.FIXTURE_SIDE, 3)
    assert np.bincount(labels).tolist() == [smoke.FIXTURE_IMAGES_PER_CLASS] * 4


def test_a_linked_smoke_data_folder_is_refused(tmp_path):
    workdir, elsewhere = tmp_path / "w", tmp_path / "elsewhere"
    workdir.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, workdir / "smoke_data")
    shrunk, _ = smoke.shrink(config_settings(config("hooker_cifar10_wrn.cfg"), str(workdir)))
    with pytest.raises(cli.UsageError) as raised:
        smoke.write_data(shrunk)
    assert str(raised.value) == (f"'{workdir / 'smoke_data'}' is a symbolic link; --smoke "
                                 "writes its miniature data there itself: remove it")
    assert not os.listdir(elsewhere)


def test_checking_a_tfds_name_reaches_no_network(monkeypatch):
    """tfds's community list is fetched from GCS: the name check never asks for it."""
    import tensorflow_datasets as tfds

    def fetch(*args, **kwargs):
        raise AssertionError("the community datasets list was fetched")
    monkeypatch.setattr(tfds.core.community, "community_register", fetch)
    sources.validate_name("cifar10")


# --- every config's smoke study, end to end (slow: `bash run.sh test -m slow`) --------

# Any download attempt fails at once: the smoke data is local.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_runs_as_a_smoke_study(path, tmp_path, monkeypatch):
    for name, value in NO_NETWORK.items():
        monkeypatch.setenv(name, value)
    workdir = str(tmp_path / "w")
    # 30 minutes at most: the slowest, ResNet-50's, took 8 on a shared 2-core machine
    # (docs/install.md); CI runs two at once.
    result = run_stage("pie.stages.study", f"--flagfile={path}", "--smoke",
                       f"--workdir={workdir}", check=False, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + "\n".join(error_lines(result))
    lines = result.stdout.splitlines()
    said = [line for line in lines if line.startswith("smoke: data: ")]
    assert len(said) == 1
    shrunk, expected = smoke.shrink(config_settings(path, workdir))
    assert said[0] == expected
    ran = [line.split()[2].rstrip(":") for line in lines if line.startswith("== stage ")
           and " done in " not in line]
    planned = [stage.name for stage in study.plan(
        shrunk, records.read_dataset_config(workdir).get("family"))]
    assert set(planned) <= set(ran)
    population = pd.read_csv(Workdir(workdir).manifest)
    assert len(population[population["method"] == "dense"]) == shrunk.seeds
    flags_txt = open(os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0",
                                  "flags.txt")).read()
    for name in ("weight_decay", "precision", "lr_schedule", "warmup_epochs"):
        if shrunk.present(name):
            assert shrunk.serialized(name) in flags_txt, name
    report = Workdir(workdir).report_dir
    assert os.path.isdir(report) and os.listdir(report)
