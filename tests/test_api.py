"""The Python API: every stage module imported into one process and run there."""
import importlib
import os
import re

import pandas as pd
import pytest
from absl import flags

from pie import commands
from conftest import ROOT
from pie.io import errors, records
from pie.io.workdir import Workdir


def stage_modules():
    return {name: importlib.import_module(module)
            for name, module in commands.available_stages().items()}


def test_every_stage_imports_beside_the_others_and_defines_flags_only_when_asked():
    modules = stage_modules()
    assert len(modules) >= 15
    defined = flags.FLAGS.flags_by_module_dict()
    for name, module in modules.items():
        assert module.__name__ not in defined, f"{name} defines flags on import"
        fresh = flags.FlagValues()
        module.define_flags(fresh)
        assert "workdir" in fresh or name == "toy", f"{name} defines no --workdir"
        assert callable(module.run), name


def test_a_flag_the_stage_does_not_have_is_one_usage_error_and_nothing_is_written(tmp_path):
    from save_checkpoint import train
    workdir = str(tmp_path / "w")
    with pytest.raises(errors.UsageError) as caught:
        train.run(workdir=workdir, sedes=2)
    assert str(caught.value).startswith("save_checkpoint.train has no flag 'sedes'; allowed: ")
    assert "seeds" in str(caught.value).split("allowed: ")[1].split(", ")
    with pytest.raises(errors.UsageError, match="^--seeds must be an integer, got 'two'$"):
        train.run(workdir=workdir, seeds="two")
    with pytest.raises(errors.UsageError, match="^--learning_rate must be a finite number > 0, "
                       "got nan$"):
        train.run(workdir=workdir, learning_rate=float("nan"))
    assert not os.path.exists(workdir)


def test_the_docs_session_runs_train_and_analysis_in_one_process(tmp_path):
    """docs/api.md's session, as written (only its workdir moved to tmp_path)."""
    with open(os.path.join(ROOT, "docs", "api.md")) as handle:
        text = handle.read()
    (code,) = re.findall(r"## A session.*?```python\n(.*?)```", text, re.S)
    workdir = str(tmp_path / "w")
    assert 'W = "runs/api-demo"' in code
    exec(compile(code.replace('W = "runs/api-demo"', f"W = {workdir!r}"), "docs/api.md",
                 "exec"), {"print": lambda *args: None})
    manifest = records.read_manifest(workdir)
    assert len(manifest) == 9
    assert sorted(set(zip(manifest["method"], manifest["sparsity"]))) == [
        ("dense", 0.0), ("magnitude", 0.5), ("magnitude", 0.9)]
    # The member's flags file holds the flags of the call, as the command line writes it.
    lines = open(Workdir(workdir).member_file(manifest["path"].iloc[0], "flags")).read()
    assert {"--dataset=digits", "--seeds=3", "--model=mlp"} <= set(lines.splitlines())
    assert all(os.path.exists(Workdir(workdir).predictions_path(member_id, "clean"))
               for member_id in manifest["member_id"])
    table = pd.read_csv(Workdir(workdir).file("tstatistic"))
    assert sorted(table["class_id"].unique()) == list(range(10))
    assert os.path.exists(Workdir(workdir).file("report_markdown"))
    # A second call of a stage in the same process: no flag defined twice, up to date.
    from per_class_accuracy import gen_tstatistic
    assert gen_tstatistic.run(workdir) is False
