"""Members that start from a parent network: --protocol, --prune_schedule, --init_from."""
import os

import numpy as np
import pytest

import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from conftest import error_lines, run_stage
from pie.compress import lineage
from pie.io import errors, records
from pie.io.workdir import Workdir
from save_checkpoint import train

P = lineage.Parent


# ------------------------------------------------------------------------- the plan


def test_oneshot_parents_are_the_dense_member_of_each_seed():
    parents = lineage.parents([0, 0.5, 0.9], 2, "magnitude", "from_dense", "oneshot", None)
    assert parents == {
        "dense_0_seed0": None, "dense_0_seed1": None,
        "magnitude_0.5_seed0": P("dense_0_seed0"), "magnitude_0.9_seed0": P("dense_0_seed0"),
        "magnitude_0.5_seed1": P("dense_0_seed1"), "magnitude_0.9_seed1": P("dense_0_seed1")}


def test_iterative_parents_step_up_the_sorted_sparsities():
    parents = lineage.parents([0.9, 0, 0.5], 1, "wt", "from_dense", "iterative", None)
    assert parents == {"dense_0_seed0": None, "wt_0.5_seed0": P("dense_0_seed0"),
                       "wt_0.9_seed0": P("wt_0.5_seed0")}
    assert lineage.training_order([0.9, 0, 0.5], "from_dense", None) == [0, 0.5, 0.9]
    assert lineage.training_order([0.9, 0, 0.5], "scratch", None) == [0.9, 0, 0.5]


def test_init_from_without_dense_members_prunes_the_file_of_each_seed():
    parents = lineage.parents([0.5], 2, "magnitude", "scratch", "oneshot", "m{seed}.keras")
    assert parents == {"magnitude_0.5_seed0": P(path="m0.keras"),
                       "magnitude_0.5_seed1": P(path="m1.keras")}
    with_dense = lineage.parents([0, 0.5], 1, "magnitude", "scratch", "oneshot", "m.keras")
    assert with_dense == {"dense_0_seed0": P(path="m.keras"),
                          "magnitude_0.5_seed0": P("dense_0_seed0")}


def test_scratch_members_have_no_parent():
    parents = lineage.parents([0, 0.5], 1, "magnitude", "scratch", "oneshot", None)
    assert parents == {"dense_0_seed0": None, "magnitude_0.5_seed0": None}


@pytest.mark.parametrize("args, message", [
    (("from_scratch", "oneshot", [0, 0.5], None),
     "unknown --protocol 'from_scratch'; allowed: scratch, from_dense"),
    (("scratch", "cascade", [0, 0.5], None),
     "unknown --prune_schedule 'cascade'; allowed: oneshot, iterative"),
    (("from_dense", "oneshot", [0.5], None),
     "--protocol=from_dense prunes each seed's dense member: --sparsities must include 0 "
     "(or give --init_from=PATH, the networks to prune)"),
    (("scratch", "iterative", [0, 0.5], None),
     "--prune_schedule=iterative steps each pruned member from the previous one: use it "
     "with --protocol=from_dense or --init_from"),
])
def test_bad_lineage_choices_are_one_usage_error(args, message):
    with pytest.raises(errors.UsageError) as caught:
        lineage.validate(*args)
    assert str(caught.value) == message


# ---------------------------------------------------------------------- training runs


def digits_model(path, input_shape=(8, 8, 1), classes=10, epochs=2, lambda_layer=False):
    """A small Sequential model trained briefly on digits (a user's own model)."""
    import tf_keras as keras
    from pie.data import sources
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Input(input_shape), keras.layers.Flatten()]
    if lambda_layer:
        layers.append(keras.layers.Lambda(lambda x: x * 2.0))
    model = keras.Sequential(layers + [keras.layers.Dense(24, activation="relu"),
                                       keras.layers.Dense(classes)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if input_shape == (8, 8, 1) and classes == 10 and epochs:
        model.fit(sources.load("digits").train_batches(32, 0, 0), epochs=epochs, verbose=0)
    model.save(path)
    return model


def kernels(path):
    from pie.models import loading
    model = loading.load_keras(path)
    return [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]


def test_init_from_keeps_the_dense_model_and_fine_tunes_pruned_members_from_it(tmp_path):
    parent_path = str(tmp_path / "mine.keras")
    digits_model(parent_path)
    workdir = str(tmp_path / "w")
    # No --epochs: with --init_from that means 0, the dense member is the given model.
    train.run(workdir=workdir, dataset="digits", init_from=parent_path, sparsities=[0, 0.6],
              seeds=1, finetune_epochs=1, learning_rate=0.001)
    manifest = records.read_manifest(workdir).set_index("member_id")
    assert list(manifest.index) == ["dense_0_seed0", "magnitude_0.6_seed0"]
    assert manifest.loc["dense_0_seed0", "parent_id"] != manifest.loc["dense_0_seed0",
                                                                      "parent_id"]  # NaN
    assert manifest.loc["magnitude_0.6_seed0", "parent_id"] == "dense_0_seed0"
    assert set(manifest["model"]) == {"init-mine.keras"}
    wd = Workdir(workdir)
    parent = kernels(parent_path)
    dense = kernels(wd.model_path(manifest.loc["dense_0_seed0"]))
    pruned = kernels(wd.model_path(manifest.loc["magnitude_0.6_seed0"]))
    # --epochs=0: the dense member is the given model, weight for weight.
    assert all(np.array_equal(a, b) for a, b in zip(parent, dense))
    # The pruned member: each layer at the target, its surviving weights the parent's
    # (fine-tuned for one epoch, so close but not equal).
    for before, after in zip(parent, pruned):
        kept = after != 0
        assert abs(1 - kept.mean() - 0.6) < 0.01
        assert np.corrcoef(before[kept], after[kept])[0, 1] > 0.9
        assert not np.array_equal(before[kept], after[kept])
        # The removed weights are the parent's smallest.
        assert np.abs(before[~kept]).max() <= np.abs(before[kept]).min() + 1e-6
    meta = records.read_json(wd.member_file(manifest.loc["dense_0_seed0", "path"], "meta"))
    assert meta["parent_file"] == parent_path and meta["epochs"] == 0


def test_from_dense_iterative_steps_each_member_from_the_previous_one(tmp_path):
    workdir = str(tmp_path / "w")
    train.run(workdir=workdir, dataset="digits", model="mlp", width=16,
              sparsities=[0.8, 0, 0.5], seeds=1, epochs=1, finetune_epochs=1,
              protocol="from_dense", prune_schedule="iterative", learning_rate=0.01)
    manifest = records.read_manifest(workdir).set_index("member_id")
    assert manifest.loc["magnitude_0.5_seed0", "parent_id"] == "dense_0_seed0"
    assert manifest.loc["magnitude_0.8_seed0", "parent_id"] == "magnitude_0.5_seed0"
    measured = manifest.loc[["dense_0_seed0", "magnitude_0.5_seed0", "magnitude_0.8_seed0"],
                            "measured_sparsity"].to_numpy()
    assert measured[0] == 0 and abs(measured[1] - 0.5) < 0.01 and abs(measured[2] - 0.8) < 0.01
    wd = Workdir(workdir)
    half = kernels(wd.model_path(manifest.loc["magnitude_0.5_seed0"]))
    most = kernels(wd.model_path(manifest.loc["magnitude_0.8_seed0"]))
    # A cascade: every weight the 0.5 member removed stays removed at 0.8.
    for a, b in zip(half[:-1], most[:-1]):  # the classifier is not pruned
        assert np.all(b[a == 0] == 0)


def test_init_model_of_the_wrong_shape_is_one_error_and_nothing_is_written(tmp_path):
    wrong = str(tmp_path / "mnist_shaped.keras")
    digits_model(wrong, input_shape=(28, 28, 1))
    workdir = str(tmp_path / "w")
    with pytest.raises(errors.ContractError) as caught:
        train.run(workdir=workdir, dataset="digits", init_from=wrong, sparsities=[0], seeds=1,
                  epochs=0)
    assert str(caught.value) == (
        f"model {wrong} takes inputs (28, 28, 1) and gives 10 outputs; dataset 'digits' has "
        "inputs (8, 8, 1) and 10 classes")
    classes = str(tmp_path / "five.keras")
    digits_model(classes, classes=5)
    with pytest.raises(errors.ContractError, match=r"gives 5 outputs; dataset 'digits' has "
                       r"inputs \(8, 8, 1\) and 10 classes$"):
        train.run(workdir=workdir, dataset="digits", init_from=classes, sparsities=[0],
                  seeds=1, epochs=0)
    assert not os.path.exists(workdir)


def test_unsafe_init_model_is_one_line_and_exit_2(tmp_path):
    unsafe = str(tmp_path / "lambda.keras")
    digits_model(unsafe, epochs=0, lambda_layer=True)
    workdir = str(tmp_path / "w")
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", "--dataset=digits",
                       f"--init_from={unsafe}", "--sparsities=0", "--seeds=1", "--epochs=0",
                       check=False)
    assert result.returncode == 2
    (line,) = error_lines(result)
    # The model-file gate refuses it before tf_keras reads anything (a Lambda layer).
    assert line.startswith(f"error: model file {unsafe} is refused: ")
    assert "Lambda" in line
    assert not os.path.exists(workdir)


def test_init_model_at_chance_warns(tmp_path, capsys):
    untrained = str(tmp_path / "untrained.keras")
    digits_model(untrained, epochs=0)
    from pie.data import sources
    from pie.models import imported
    source = sources.load("digits")
    inputs, labels = imported.few_eval_images(source)
    guesses = np.zeros((len(labels), 10))  # always class 0
    imported.warn_if_chance(untrained, guesses, labels, source)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: model {untrained} scores "
                              f"{100 * np.mean(labels == 0):.1f}% top-1 on {len(labels)} eval "
                              f"images of 'digits', chance level "
                              f"{100 * np.bincount(labels).max() / len(labels):.1f}%")
    assert "HxWxC float32 in [0, 1]" in warning
    perfect = np.eye(10)[labels]
    assert imported.warn_if_chance(untrained, perfect, labels, source) == 1.0
    assert capsys.readouterr().err == ""
