"""The Python API: every stage module imported into one process and run there."""
import importlib
import os

import pandas as pd
import pytest
from absl import flags

from pie import commands
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
    with pytest.raises(errors.UsageError, match="^flag --seeds=two: invalid literal"):
        train.run(workdir=workdir, seeds="two")
    assert not os.path.exists(workdir)


def test_train_predictions_and_analysis_run_in_one_process(tmp_path):
    from save_checkpoint import train
    from pie_dataset_gen import aggregate_predictions, predictions
    from per_class_accuracy import gen_tstatistic
    workdir = str(tmp_path / "w")
    train.run(workdir=workdir, dataset="digits", model="mlp", width=8, sparsities=[0, 0.5],
              seeds=2, epochs=1, learning_rate=0.01)
    manifest = records.read_manifest(workdir)
    assert sorted(manifest["member_id"]) == sorted(
        f"{m}_{s}_seed{k}" for m, s in (("dense", "0"), ("magnitude", "0.5")) for k in (0, 1))
    # The member's flags file holds the flags of this call, as the command line writes it.
    flags_text = open(Workdir(workdir).member_file(manifest["path"].iloc[0], "flags")).read()
    assert "--dataset=digits" in flags_text.splitlines()
    assert "--seeds=2" in flags_text.splitlines()

    predictions.run(workdir=workdir)
    assert all(os.path.exists(Workdir(workdir).predictions_path(member_id, "clean"))
               for member_id in manifest["member_id"])
    assert gen_tstatistic.run(workdir=workdir) is True
    table = pd.read_csv(Workdir(workdir).file("tstatistic"))
    assert sorted(table["class_id"].unique()) == list(range(10))
    assert set(zip(table["method"], table["sparsity"])) == {("magnitude", 0.5)}
    assert aggregate_predictions.run(workdir=workdir) is True
    # A second call of the same stage in the same process: no flag is defined twice.
    assert gen_tstatistic.run(workdir=workdir) is False
