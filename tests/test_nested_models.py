"""Keras models as users write them (issue 25.4): nested models pruned through
--init_from and measured by import-members; a model at chance stops the run."""
import os

import numpy as np
import pytest

import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import user_models
from pie.compress import pruning
from pie.io import errors, records
from pie.models import loading
from save_checkpoint import import_members, train


@pytest.fixture(scope="module")
def nested_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nested") / "nested.keras")
    user_models.nested_digits_model().save(path)
    return path


def test_prunable_layers_are_found_in_nested_models(nested_file):
    model = loading.load_keras(nested_file)
    names = pruning.prunable_layer_names(model)
    # Paths of the enclosing models, then the layer's own (automatic) name.
    assert [name.split("/")[:-1] for name in names] == [["backbone", "conv_block"],
                                                         ["backbone"], []]
    assert names[-1] == "head"
    kernels = [pruning.kernel_of(model, name) for name in names]
    assert [k.shape for k in kernels] == [k.shape for k in user_models.all_kernels(model)]


def test_nested_model_pruned_through_init_from(nested_file, tmp_path):
    workdir = str(tmp_path / "w")
    train.run(workdir=workdir, dataset="digits", init_from=nested_file, sparsities="0,0.5",
              seeds=1, finetune_epochs=1, learning_rate=0.001)
    manifest = records.read_manifest(workdir).set_index("member_id")
    row = manifest.loc["magnitude_0.5_seed0"]
    assert abs(row["measured_sparsity"] - 0.5) < 0.01
    pruned = loading.load_keras(os.path.join(workdir, row["model_file"]))
    # Measured again without the library: every kernel, two levels down included.
    assert abs(user_models.zero_share(pruned) - 0.5) < 0.01
    for kernel in user_models.all_kernels(pruned):
        assert abs(np.mean(kernel.numpy() == 0) - 0.5) < 0.01
    meta = records.read_json(os.path.join(workdir, row["path"], "meta.json"))
    assert set(meta["measured_sparsity_per_layer"]) == set(
        pruning.prunable_layer_names(pruned))
    assert manifest.loc["dense_0_seed0", "measured_sparsity"] == 0


def test_nested_model_imported_at_0_7_is_measured(tmp_path, capsys):
    path = str(tmp_path / "pruned.keras")
    model = user_models.prune_by_hand(user_models.nested_digits_model(), 0.7)
    model.save(path)
    expected = user_models.zero_share(model)
    assert abs(expected - 0.7) < 0.001
    workdir = str(tmp_path / "w")
    import_members.run(workdir=workdir, dataset="digits", models=path, method="mine",
                       sparsity=0.7)
    row = records.read_manifest(workdir).iloc[0]
    assert abs(row["measured_sparsity"] - 0.7) < 0.01
    assert row["measured_sparsity"] == pytest.approx(expected, abs=1e-6)
    assert "warning" not in capsys.readouterr().err
    # Declared 0.5, measured 0.7: one warning line.
    import_members.run(workdir=str(tmp_path / "w2"), dataset="digits", models=path,
                       method="mine", sparsity=0.5)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning")]
    assert warnings == [f"warning: model {path} is declared --sparsity=0.5 but "
                        f"{expected:.4f} of its prunable kernels are zeros (more than 0.02 "
                        "apart)"]


def test_a_model_at_chance_stops_the_run_unless_allowed(tmp_path):
    path = str(tmp_path / "untrained.keras")
    user_models.nested_digits_model(epochs=0).save(path)
    workdir = str(tmp_path / "w")
    with pytest.raises(errors.ContractError,
                       match=r"^model .*untrained.keras scores .*% top-1 on 256 eval images "
                             r"of 'digits', chance level .*%: the 'small' family gives HxWxC "
                             r"float32 in \[0, 1\] \(uint8 / 255\), no mean or std "
                             r"\(docs/contracts.md\); --allow_chance to go on$"):
        import_members.run(workdir=workdir, dataset="digits", models=path, method="dense")
    assert not os.path.exists(workdir)
    with pytest.raises(errors.ContractError, match="--allow_chance to go on$"):
        train.run(workdir=workdir, dataset="digits", init_from=path, sparsities="0", seeds=1)
    assert not os.path.exists(workdir)
    import_members.run(workdir=workdir, dataset="digits", models=path, method="dense",
                       allow_chance=True)
    assert len(records.read_manifest(workdir)) == 1
