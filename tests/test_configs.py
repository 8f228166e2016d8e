"""configs/: every config parses with the study's flags, says how to run it, and the
embedded one is exactly the default run; the study passes each stage what it needs."""
import glob
import os
import re

import pytest
from absl import flags

from conftest import ROOT, error_lines, run_stage
from pie.io import cli
from pie.io.workdir import Workdir
from pie.stages import study

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))
HEADER_FIELDS = ("# command:", "# hardware:", "# run time:", "# reproduces:")


def study_flags(*args):
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", *args])
    return cli.settings_of(values, "pie.stages.study")


def test_the_published_setups_are_there():
    names = {os.path.basename(path) for path in CONFIGS}
    assert {"embedded_mnist5k.cfg", "hooker_imagenet_resnet50.cfg", "hooker_cifar10_wrn.cfg",
            "celeba_resnet18_blond.cfg", "lost_in_pruning_cifar10_resnet20.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_parses_with_known_flags_and_has_its_header(path):
    with open(path) as handle:
        lines = handle.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    for field in HEADER_FIELDS:
        assert any(line.startswith(field) for line in header), f"{path} lacks '{field}'"
    values = study_flags(f"--flagfile={path}")  # an unknown flag would raise here
    given = [line.split("=")[0][2:] for line in lines if line.startswith("--")]
    assert given and all(name in values for name in given)
    study.validate(values)
    assert [name for name, _, _ in study.plan(values, "imagenet")][-1] == "report"


def test_the_embedded_config_is_the_default_run():
    defaults = study_flags()
    embedded = study_flags(f"--flagfile={os.path.join(ROOT, 'configs', 'embedded_mnist5k.cfg')}")
    assert embedded.as_dict() == defaults.as_dict()
    # What the training stage gets: the embedded study's choices, nothing else.
    assert study.train_args(defaults) == ["--epochs=8", "--seeds=6",
                                          "--sparsities=0,0.5,0.8,0.95", "--workdir=runs/demo",
                                          "--workers=0"]


def test_every_stage_gets_what_it_needs():
    values = study_flags("--dataset=digits", "--model=mlp", "--seeds=2", "--epochs=2",
                         "--workdir=W", "--data_dir=D", "--group_attributes=Male,Young",
                         "--toy_dataset=moons")
    # --seeds=2 is save_checkpoint.train's own default: not repeated.
    assert study.train_args(values) == ["--data_dir=D", "--dataset=digits", "--epochs=2",
                                        "--model=mlp", "--sparsities=0,0.5,0.8,0.95",
                                        "--workdir=W", "--workers=0"]
    stages = {name: args for name, _, args in study.plan(values, "small")}
    assert list(stages) == ["quantize", "predictions", "per-class", "t-test", "pies",
                            "pie-tfrecords", "subgroups", "corruptions", "robustness",
                            "noise-floor", "noise-similarity", "informative-features", "cost",
                            "toy", "report"]
    assert all(args[0] == "--workdir=W" for name, args in stages.items() if name != "toy")
    assert "--data_dir=D" in stages["predictions"] and "--data_dir=D" in stages["quantize"]
    assert stages["subgroups"][1:] == ["--group_attributes=Male,Young", "--data_dir=D"]
    assert stages["toy"][-1] == f"--out={Workdir('W').toy_dir}"
    # --init_from without --epochs: the given model is not retrained (train's own rule).
    assert "--epochs=6" not in study.train_args(study_flags("--init_from=m.keras"))
    assert "--epochs=3" in study.train_args(study_flags("--init_from=m.keras", "--epochs=3"))
    # Toy 2-D sets have no images: the image stages are left out.
    toy = [name for name, _, _ in study.plan(values, "toy")]
    assert not set(toy) & set(study.IMAGE_STAGES)
    skipped = study_flags("--skip=cost,toy", "--quantize_modes=none")
    assert [name for name, _, _ in study.plan(skipped, "small")][:1] == ["predictions"]
    assert {"cost", "toy"}.isdisjoint(name for name, _, _ in study.plan(skipped, "small"))


def test_a_config_naming_an_unknown_flag_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.cfg"
    workdir = tmp_path / "w"
    bad.write_text(f"# a typo\n--workdir={workdir}\n--sparsites=0,0.5\n")
    result = run_stage("pie.stages.study", f"--flagfile={bad}", check=False)
    assert result.returncode == 2
    assert error_lines(result) == ["error: Unknown command line flag 'sparsites'. "
                                   "Did you mean: sparsities ?"]
    assert not workdir.exists()


# --- recipes as published, accuracy targets and run times (issue 27) -----------------

def _header(path):
    with open(path) as handle:
        return [line for line in handle.read().splitlines() if line.startswith("#")]


def _recipe(values):
    from pie.compress import schedules
    return schedules.validate(values.lr_schedule, values.warmup_epochs,
                              values.lr_decay_epochs, values.lr_decay_factor,
                              values.weight_decay, values.weight_decay_mode,
                              values.lr_per_256)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "embedded" not in p],
                         ids=os.path.basename)
def test_published_config_states_recipe_accuracy_and_run_time_formula(path):
    header = _header(path)
    text = "\n".join(header).lower()
    assert "not expressible" not in text
    assert any(line.startswith("# accuracy:") for line in header), path
    start = next(i for i, line in enumerate(header) if line.startswith("# run time:"))
    end = next(i for i, line in enumerate(header) if i > start and re.match(r"# \w+:", line))
    run_time = " ".join(header[start:end])
    # A formula, and each rate labelled with where it comes from.
    assert "images x epochs x" in run_time and "images per second" in run_time
    assert "MEASURED" in run_time and ("PUBLISHED" in run_time or "ESTIMATE" in run_time)
    assert "benchmarks/accelerator.py" in run_time
    assert "estimated, about" not in text  # the old guesses are gone
    _recipe(study_flags(f"--flagfile={path}"))  # the recipe flags are valid


def test_imagenet_config_is_hookers_recipe():
    """docs/reference: batch 4096, 32,000 steps, Nesterov 0.9, weight decay 1e-4, label
    smoothing 0.1, LR 0.1 x batch/256 with a 5-epoch warm-up, x0.1 at epochs 30/60/80,
    the study's ResNet-50; cubic ramp 5,000-8,000 every 500 steps."""
    from pie.compress import schedules
    values = study_flags(f"--flagfile={os.path.join(ROOT, 'configs', 'hooker_imagenet_resnet50.cfg')}")
    recipe = _recipe(values)
    assert (values.batch_size, values.steps_per_epoch * values.epochs) == (4096, 32_000)
    assert values.optimizer == "sgd" and values.label_smoothing == 0.1
    assert (recipe.weight_decay, recipe.weight_decay_mode) == (1e-4, "l2")
    assert values.model == "resnet50"
    assert (values.begin_step, values.end_step, values.frequency, values.power) == (
        5000, 8000, 500, 3.0)

    def rate(epoch):  # the rate of the first step of a (0-based) epoch
        return schedules.rate_at(recipe, values.learning_rate, values.batch_size,
                                 values.steps_per_epoch, values.epochs,
                                 epoch * values.steps_per_epoch)
    assert rate(0) == pytest.approx(1.6 / (5 * 320))  # warm-up: 1 step of 1,600
    assert [rate(e) for e in (5, 29, 30, 59, 60, 79, 80, 99)] == pytest.approx(
        [1.6, 1.6, 0.16, 0.16, 0.016, 0.016, 0.0016, 0.0016])


def test_cifar_configs_decay_their_rates():
    from pie.compress import schedules
    for name, decay in (("hooker_cifar10_wrn.cfg", (60.0, 120.0, 160.0)),
                        ("lost_in_pruning_cifar10_resnet20.cfg", (91.0, 136.0))):
        recipe = _recipe(study_flags(f"--flagfile={os.path.join(ROOT, 'configs', name)}"))
        assert recipe.schedule == "step" and recipe.decay_epochs == decay
        assert recipe.weight_decay > 0
