"""configs/: every config parses with the study's flags, says how to run it, and the
embedded one is exactly the default run; the study passes each stage what it needs."""
import glob
import os

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
    assert study.train_args(defaults) == ["--epochs=12", "--seeds=10",
                                          "--sparsities=0,0.5,0.8,0.95", "--workdir=runs/demo",
                                          "--workers=0"]


def test_every_stage_gets_what_it_needs():
    values = study_flags("--dataset=digits", "--model=mlp", "--seeds=2", "--epochs=2",
                         "--workdir=W", "--data_dir=D", "--group_attributes=Male,Young")
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
