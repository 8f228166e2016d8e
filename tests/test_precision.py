"""Mixed precision (pie.compress.precision): a mixed_bfloat16 population trains on
CPU, is saved in float32, predicts within 2 points of the float32 one, and its
pruned member keeps its zeros."""
import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_stage
from pie.compress import precision, pruning, training
from pie.data import sources
from pie.io.workdir import Workdir
from pie.models import builders, loading

FLAGS = ["--dataset=digits", "--model=small_cnn", "--width=8", "--sparsities=0,0.5",
         "--seeds=1", "--epochs=4", "--learning_rate=0.01"]


def _train(tmp_path, name):
    workdir = str(tmp_path / name)
    run_stage("save_checkpoint.train", f"--workdir={workdir}", f"--precision={name}", *FLAGS)
    return Workdir(workdir)


def test_mixed_bfloat16_trains_saves_float32_and_keeps_masks(tmp_path):
    reference = _train(tmp_path, "float32")
    mixed = _train(tmp_path, "mixed_bfloat16")
    source = sources.load("digits")
    top1 = {}
    for workdir in (reference, mixed):
        manifest = pd.read_csv(workdir.manifest)
        for _, row in manifest.iterrows():
            model = loading.load_keras(workdir.model_path(row))
            # Saved in float32 whatever it trained in: every layer, every weight.
            assert precision.is_float32(model)
            assert all(w.dtype == np.float32 for w in model.get_weights())
            top1[(workdir.root, row["member_id"])] = training.evaluate_top1(model, source, 256)
            if row["sparsity"] > 0:  # the pruned member keeps its zeros
                per_layer, _ = pruning.kernel_sparsity(
                    model, pruning.prunable_layer_names(model))
                pruning.check_sparsity(per_layer, row["sparsity"])
                assert min(per_layer.values()) >= 0.5 - pruning.SPARSITY_TOLERANCE
            meta = pd.read_json(workdir.member_file(row["path"], "meta"), typ="series")
            assert meta["precision"] == os.path.basename(workdir.root)
    for member in ("dense_0_seed0", "magnitude_0.5_seed0"):
        float32 = top1[(reference.root, member)]
        assert float32 > 0.8  # trained, so the comparison means something
        assert abs(top1[(mixed.root, member)] - float32) <= 0.02
    rows = pd.read_csv(mixed.member_file(
        os.path.join("checkpoints", "magnitude", "sparsity_0.5", "seed_0"), "history"))
    assert rows["sparsity"].iloc[-1] == pytest.approx(0.5, abs=pruning.SPARSITY_TOLERANCE)


def test_mixed_policy_keeps_float32_logits_and_variables():
    import tf_keras as keras
    try:
        precision.set_policy("mixed_bfloat16")
        model = builders.build("resnet20", (8, 8, 1), 3, width=2)
        assert model.get_layer(builders.CLASSIFIER).dtype_policy.name \
            == "float32"
        assert model.output.dtype == "float32"
        assert all(v.dtype == "float32" for v in model.weights)
        assert not precision.is_float32(model)
        copy = precision.float32_model(model)
        assert precision.is_float32(copy)
        x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
        for got, want in zip(copy.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(got, want)
        # bfloat16 keeps about 3 significant digits: the float32 copy agrees that far.
        np.testing.assert_allclose(copy(x, training=False), model(x, training=False),
                                   atol=0.1, rtol=0.05)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain = builders.build("mlp", (4,), 3, width=4)
    assert precision.float32_model(plain) is plain  # float32: the model itself


def test_mixed_bfloat16_m_by_n_member_trains_keeps_its_pattern_and_predicts_in_float32(
        tmp_path):
    """A member made from a finished one (m_by_n, from the dense member saved in
    float32) trains in mixed_bfloat16: tfmot's wrapper meets a layer of its own policy
    (a float32 kernel under a bfloat16 mask failed); the member is saved in float32
    and keeps 2:4 in every kernel it pruned."""
    from pie.compress import methods_m_by_n
    workdir = Workdir(str(tmp_path / "w"))
    run_stage("save_checkpoint.train", f"--workdir={workdir.root}", "--dataset=digits",
              "--model=small_cnn", "--width=4", "--seeds=1", "--epochs=1",
              "--finetune_epochs=1", "--learning_rate=0.01", "--method=m_by_n",
              "--sparsities=0,0.5", "--precision=mixed_bfloat16")
    manifest = pd.read_csv(workdir.manifest).set_index("member_id")
    row = manifest.loc["m_by_n_0.5_seed0"]
    assert row["parent_id"] == "dense_0_seed0"
    meta = pd.read_json(workdir.member_file(row["path"], "meta"), typ="series")
    assert meta["precision"] == "mixed_bfloat16"
    model = loading.load_keras(workdir.model_path(row))
    assert precision.is_float32(model)
    assert all(w.dtype == np.float32 for w in model.get_weights())
    names = pruning.prunable_layer_names(model)
    assert names
    for name in names:
        kernel = model.get_layer(name).kernel.numpy()
        assert methods_m_by_n.follows_pattern(kernel, (2, 4)), name
    x = sources.load("digits").eval_arrays()[0][:4]
    assert model(x, training=False).dtype == "float32"


def test_in_policy_copies_a_float32_model_into_the_global_policy():
    import tf_keras as keras
    saved = builders.build("resnet20", (8, 8, 1), 3, width=2)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    assert precision.in_policy(saved) is saved  # float32: the model itself
    try:
        precision.set_policy("mixed_bfloat16")
        copy = precision.in_policy(saved)
        policies = {layer.name: layer.dtype_policy.name for layer in copy.layers}
        # The input and the logits as built; every other layer in the policy.
        assert policies.pop(builders.CLASSIFIER) == "float32"
        assert policies.pop(copy.layers[0].name) == "float32"
        assert set(policies.values()) == {"mixed_bfloat16"}
        assert copy.output.dtype == "float32"
        for got, want in zip(copy.get_weights(), saved.get_weights()):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(copy(x, training=False), saved(x, training=False),
                                   atol=0.1, rtol=0.05)
        assert precision.in_policy(copy) is copy  # already mixed: as it is
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_float16_scales_the_loss_and_jit_is_a_compile_option():
    import tf_keras as keras
    from pie.compress import schedules
    optimizer = schedules.build_optimizer("sgd", 0.1, loss_scale=precision.needs_loss_scale(
        "mixed_float16"))
    assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert not precision.needs_loss_scale("mixed_bfloat16")
    assert precision.compile_options(True) == {"jit_compile": True}
    assert precision.compile_options(False) == {}


# The benchmark end to end (about 22 s): with the smoke studies in the slow step, which CI
# runs.
@pytest.mark.slow
def test_accelerator_benchmark_runs_on_cpu():
    """benchmarks/accelerator.py end to end (a small model, 8 px: the code path of the
    ResNet-50 run, in seconds); its rates are positive, its last line the headline."""
    import re
    import subprocess
    import sys
    from conftest import ROOT
    result = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "accelerator.py"), "--model=small_cnn",
         "--width=2", "--image_size=8", "--num_classes=10", "--batch_size=4", "--steps=3",
         "--precision=mixed_bfloat16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    rates = {name: float(value) for name, value in re.findall(
        r"^(plain_keras|pie_dense|pie_pruned)_images_per_s=([0-9.]+)$", result.stdout, re.M)}
    assert set(rates) == {"plain_keras", "pie_dense", "pie_pruned"}
    assert all(value > 0 for value in rates.values())
    assert lines[0].startswith("device: CPU")
    assert "precision mixed_bfloat16" in lines[1]
    name, value = lines[-1].split("=")
    assert name == "pruned_over_plain"
    assert float(value) == pytest.approx(rates["pie_pruned"] / rates["plain_keras"], abs=1e-3)
