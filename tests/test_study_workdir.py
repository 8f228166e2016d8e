"""The study follows its workdir (pie.stages.study_workdir): the dataset and population
flags not given are the workdir's, a given one that contradicts them is refused, and a
study runs from any current folder with the package alone."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from conftest import ROOT, error_lines
from pie.io import cli, errors
from pie.io.workdir import Workdir
from pie.stages import study, study_workdir

TRAIN_LINES = ["--dataset=digits", "--epochs=3", "--method=magnitude", "--model=mlp",
               "--seeds=2", "--sparsities=0,0.5", "--workdir=W"]


def study_flags(workdir, *args):
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", f"--workdir={workdir}", *args])
    return cli.settings_of(values, "pie.stages.study")


def population(tmp_path, members, dataset="digits", **config):
    """A workdir of `members`: (method, sparsity, seed, flags.txt lines), written in
    that order (the last one is the newest)."""
    workdir = Workdir(tmp_path / "w")
    os.makedirs(workdir.root)
    (tmp_path / "w" / "dataset.json").write_text(json.dumps(
        dict({"dataset": dataset, "toy_seed": 0}, **config)))
    rows = ["member_id,method,sparsity,measured_sparsity,seed,dataset,model,top1,path,"
            "model_file,parent_id"]
    for number, (method, sparsity, seed, lines) in enumerate(members):
        relpath = workdir.member_relpath(method, sparsity, seed)
        os.makedirs(workdir.member_dir(relpath))
        flags_path = workdir.member_file(relpath, "flags")
        with open(flags_path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.utime(flags_path, ns=(10**18 + number, 10**18 + number))  # written in order
        rows.append(f"{method}_{sparsity}_seed{seed},{method},{sparsity},{sparsity},{seed},"
                    f"{dataset},mlp,0.9,{relpath},{relpath}/model.keras,")
    (tmp_path / "w" / "population.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "w")


def test_a_workdir_without_a_population_fixes_nothing(tmp_path):
    assert study_workdir.recorded_flags(str(tmp_path / "missing")) == {}
    assert study_workdir.recorded_flags(str(tmp_path)) == {}
    settings = study_flags(str(tmp_path))
    assert study_workdir.follow(settings, study.define_flags) is settings


def test_dataset_keys_left_out_fix_nothing_and_a_null_toy_seed_is_0(tmp_path):
    (tmp_path / "dataset.json").write_text('{"dataset": "digits", "toy_seed": null}')
    recorded = study_workdir.recorded_flags(str(tmp_path))
    assert {name: entry.value for name, entry in recorded.items()} == {
        "dataset": "digits", "toy_seed": 0}


def test_the_flags_not_given_are_the_workdirs(tmp_path):
    workdir = population(tmp_path, [("dense", 0, 0, TRAIN_LINES),
                                    ("magnitude", 0.5, 0, TRAIN_LINES)],
                         data_dir="/data/tfds")
    followed = study_workdir.follow(study_flags(workdir, "--seeds=2", "--epochs=3"),
                                    study.define_flags)
    assert (followed.dataset, followed.model, followed.seeds, followed.epochs,
            followed.sparsities, followed.method, followed.width, followed.data_dir) == \
        ("digits", "mlp", 2, 3, "0,0.5", "magnitude", None, "/data/tfds")
    # The training stage gets the workdir's flags, as if given.
    assert study.train_args(followed) == [
        "--data_dir=/data/tfds", "--dataset=digits", "--epochs=3", "--model=mlp",
        "--sparsities=0,0.5", f"--workdir={workdir}", "--workers=0"]
    assert not followed.present("dataset")
    # Given flags that agree (sparsity levels in any order), or another data folder, run.
    agreed = study_flags(workdir, "--dataset=digits", "--sparsities=0.5,0",
                         "--data_dir=/moved")
    assert study_workdir.follow(agreed, study.define_flags).data_dir == "/moved"


def test_the_rest_of_the_recipe_is_followed_where_flags_txt_has_it(tmp_path):
    """A population trained at batch 32 with a step schedule: a study run again without
    those flags trains that recipe (not the defaults, which training would refuse);
    a recipe flag an older flags.txt lacks keeps its default."""
    lines = TRAIN_LINES + ["--batch_size=32", "--lr_schedule=step", "--lr_decay_epochs=2"]
    workdir = population(tmp_path, [("dense", 0, 0, lines)])
    followed = study_workdir.follow(study_flags(workdir), study.define_flags)
    defaults = study_flags(str(tmp_path / "new"))
    assert (followed.batch_size, followed.lr_schedule, followed.lr_decay_epochs) == \
        (32, "step", "2")
    assert not any(line.startswith("--optimizer=") for line in lines)
    assert followed.optimizer == defaults.optimizer
    assert {"--batch_size=32", "--lr_schedule=step"} <= set(study.train_args(followed))
    with pytest.raises(errors.UsageError) as raised:
        study_workdir.follow(study_flags(workdir, "--batch_size=64"), study.define_flags)
    assert str(raised.value).startswith(
        f"--batch_size=64 contradicts --workdir={workdir}: its population has --batch_size=32")


def test_a_given_flag_that_contradicts_the_workdir_is_one_line(tmp_path):
    workdir = population(tmp_path, [("dense", 0, 0, TRAIN_LINES)])
    source = os.path.join("checkpoints", "dense", "sparsity_0", "seed_0", "flags.txt")
    for given, message in (
            ("--dataset=mnist5k", f"--dataset=mnist5k contradicts --workdir={workdir}: its "
             "population has --dataset=digits (dataset.json); leave --dataset out or use "
             "another --workdir"),
            ("--seeds=3", f"--seeds=3 contradicts --workdir={workdir}: its population has "
             f"--seeds=2 ({source}); leave --seeds out or use another --workdir"),
            ("--width=8", f"--width=8 contradicts --workdir={workdir}: its population has "
             f"no --width ({source}); leave --width out or use another --workdir")):
        with pytest.raises(errors.UsageError) as raised:
            study_workdir.follow(study_flags(workdir, given), study.define_flags)
        assert str(raised.value) == message


def test_the_last_training_run_of_the_main_population_counts(tmp_path):
    """Quantized, imported and --extra_methods members are written later, with other
    flags: the main population's last trained member says how it was trained."""
    later = [line.replace("--seeds=2", "--seeds=4") for line in TRAIN_LINES]
    qat = [line.replace("--method=magnitude", "--method=qat") for line in TRAIN_LINES]
    workdir = population(tmp_path, [
        ("dense", 0, 0, TRAIN_LINES), ("dense", 0, 3, later),
        ("qat", 0, 0, [line.replace("--model=mlp", "--model=small_cnn") for line in qat]),
        ("quant_float16", 0, 0, ["--modes=float16", "--workdir=W"]),
        ("dense", 0, 9, ["--models=mine/*.keras", "--method=dense", "--sparsity=0"])])
    recorded = study_workdir.recorded_flags(workdir)
    assert (recorded["seeds"].value, recorded["model"].value) == (4, "mlp")
    assert recorded["seeds"].source == os.path.join("checkpoints", "dense", "sparsity_0",
                                                    "seed_3", "flags.txt")
    assert recorded["dataset"].source == "dataset.json"


def test_a_bad_value_in_a_flags_file_is_one_line(tmp_path):
    workdir = population(tmp_path, [("dense", 0, 0, TRAIN_LINES + ["--seeds=two"])])
    with pytest.raises(errors.ContractError) as raised:
        study_workdir.recorded_flags(workdir)
    path = os.path.join(workdir, "checkpoints", "dense", "sparsity_0", "seed_0", "flags.txt")
    assert str(raised.value).startswith(f"{path}: --seeds=two does not parse: ")
    assert "\n" not in str(raised.value)


def test_groups_for_mnist5k_only_and_the_toy_study_in_the_embedded_one_or_asked():
    def planned(*args):
        return [name for name, _, _ in study.plan(study_flags("W", *args), "small")]
    assert {"subgroups", "toy"} <= set(planned())  # bash run.sh: the embedded study
    digits = planned("--dataset=digits", "--model=mlp")
    assert "subgroups" not in digits and "toy" not in digits
    assert "toy" in planned("--dataset=digits", "--toy_dataset=circles")
    assert "toy" not in planned("--toy_dataset=none")
    mnist_mlp = study.stage_args(study_flags("W", "--model=mlp"))
    assert mnist_mlp["subgroups"] == ["--workdir=W", f"--groups_csv={Workdir('W').file('groups')}"]
    assert "toy" not in mnist_mlp


# --- a whole (tiny) study, run from an empty folder -----------------------------------

# The shared tiny digits population (conftest) is the workdir: its training stage finds
# every member finished, so the study costs two process starts, not a training.
# Every stage but training and the report skipped (subgroups and toy not named: that
# they do not run is the study's choice); each stage costs a process start.
SKIPPED = ["predictions", "per-class", "t-test", "pies", "pie-tfrecords", "corruptions",
           "robustness", "noise-floor", "noise-similarity", "informative-features", "cost"]
STUDY_FLAGS = ["--workdir=w", "--extra_methods=none", "--quantize_modes=none", "--workers=1",
               "--skip=" + ",".join(SKIPPED)]
# Given, and as the workdir has them (--model and --width, not given, come from it).
POPULATION = ["--dataset=digits", "--seeds=2", "--epochs=1", "--sparsities=0,0.5"]


def run_module(folder, module, *args):
    """`python -m module` with an empty folder as the current one: nothing is found
    by a path relative to the repository (PYTHONPATH: this checkout, which is what an
    install of it holds)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def digits_study(tiny_population, tmp_path_factory):
    folder = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(tiny_population, folder / "w")
    result = run_module(folder, "pie.stages.study", *STUDY_FLAGS, *POPULATION)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, result


def test_a_digits_study_runs_from_any_folder_without_mnist5k_extras(digits_study):
    folder, result = digits_study
    stages = [line.split(":")[0] for line in result.stdout.splitlines()
              if line.startswith("== stage ") and " done in " not in line]
    assert stages == ["== stage train", "== stage report"]
    assert "--model=small_cnn" not in result.stdout and "--width=4" in result.stdout
    assert os.path.isfile(Workdir(folder / "w").file("report_markdown"))


def test_a_rerun_takes_the_dataset_and_population_from_the_workdir(digits_study, monkeypatch,
                                                                   capsys):
    folder, _ = digits_study
    monkeypatch.chdir(folder)
    # The same study without its population flags: they all come back from the
    # workdir, so its stamp matches and nothing is left to do (in this process: the
    # Python API, as `pie study` but without a process start).
    assert study.run(**{arg[2:].split("=")[0]: arg.split("=", 1)[1]
                        for arg in STUDY_FLAGS}) == 0
    assert "== study up to date" in capsys.readouterr().out


def test_a_rerun_with_a_contradicting_flag_is_refused_and_writes_nothing(digits_study):
    folder, _ = digits_study
    before = study._fingerprint(str(folder / "w"))
    stamp = Workdir(folder / "w").stamp("", "study")
    with open(stamp) as handle:
        stamp_text = handle.read()
    refused = run_module(folder, "pie.stages.study", *STUDY_FLAGS, "--dataset=mnist5k")
    assert refused.returncode == 2
    assert error_lines(refused) == [
        "error: --dataset=mnist5k contradicts --workdir=w: its population has "
        "--dataset=digits (dataset.json); leave --dataset out or use another --workdir"]
    assert "== stage" not in refused.stdout
    assert study._fingerprint(str(folder / "w")) == before
    with open(stamp) as handle:
        assert handle.read() == stamp_text
