"""A compression method added through the public registry, in this one file, and carried
through training, predictions, the t-test and PIEs (docs/architecture.md's example)."""
import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie.compress import methods, pruning
from pie.io import errors


# --- the worked example of docs/architecture.md, "A new compression method"
class RandomPruning(methods.Method):
    """Removes a random `sparsity` share of all prunable weights, drawn from the seed."""
    name = "random"
    description = "random weights removed once from the dense member (a baseline)"
    when = methods.ONCE
    mask_kind = methods.WEIGHT_MASK

    def one_shot_mask(self, model, sparsity, reference, seed, layer_names):
        rng = np.random.default_rng(seed)
        scores = {name: rng.random(model.get_layer(name).kernel.shape) for name in layer_names}
        masks = pruning.global_keep_masks(scores, sparsity)
        pruning.apply_weight_masks(model, masks)
        return masks

    def check(self, per_layer, overall, sparsity, mask):
        pruning.check_overall_sparsity(overall, sparsity)
        return {}
# --- end of the example


@pytest.fixture
def random_method():
    method = methods.register(RandomPruning())
    yield method
    methods.unregister("random")


def test_a_method_from_one_file_trains_and_reaches_predictions_ttest_and_pies(
        random_method, tmp_path):
    from save_checkpoint import train
    from pie_dataset_gen import aggregate_predictions, predictions
    from per_class_accuracy import gen_tstatistic
    from pie.io import records
    from pie.io.workdir import Workdir
    from pie.models import loading
    workdir = str(tmp_path / "w")
    train.run(workdir=workdir, dataset="digits", model="mlp", width=16, sparsities=[0, 0.6],
              seeds=2, epochs=1, finetune_epochs=1, learning_rate=0.01, method="random")
    manifest = records.read_manifest(workdir)
    pruned = manifest[manifest["method"] == "random"]
    assert sorted(pruned["seed"]) == [0, 1]
    assert (pruned["parent_id"] == ["dense_0_seed0", "dense_0_seed1"]).all()
    assert np.allclose(pruned["measured_sparsity"], 0.6, atol=0.005)
    # The kept weights are exactly the method's draw for the seed: its zeros are the
    # mask (fine-tuning held them at 0), computed here from the same seed.
    row = pruned[pruned["seed"] == 1].iloc[0]
    model = loading.load_keras(Workdir(workdir).model_path(row))
    names = pruning.prunable_layer_names(model)
    expected = RandomPruning().one_shot_mask(
        loading.load_keras(Workdir(workdir).model_path(
            manifest[manifest["member_id"] == "dense_0_seed1"].iloc[0])), 0.6, None, 1, names)
    for name in names:
        assert np.array_equal(model.get_layer(name).kernel.numpy() != 0, expected[name])

    predictions.run(workdir=workdir)
    gen_tstatistic.run(workdir)
    aggregate_predictions.run(workdir)
    wd = Workdir(workdir)
    summary = pd.read_csv(wd.file("tstatistic_summary"))
    assert ("random", 0.6) in set(zip(summary["method"], summary["sparsity"]))
    pies = pd.read_csv(wd.file("pie_summary"))
    assert "random" in set(pies["method"])


def test_the_registry_refuses_what_is_not_a_method_and_names_the_allowed_ones(random_method):
    assert "random" in methods.names()
    assert methods.get("random") is random_method
    with pytest.raises(ValueError, match="a method named 'random' is registered already"):
        methods.register(RandomPruning())
    with pytest.raises(TypeError, match="register\\(\\) takes a Method instance"):
        methods.register("random")
    with pytest.raises(errors.UsageError, match="^unknown --method 'nope'; allowed: "
                       "magnitude, wt, sipp, sipp_mean, weight, grad, taylor, lrp, filter_l1, "
                       "m_by_n, qat, pqat, cluster, distill, random$"):
        methods.get("nope")
    with pytest.raises(ValueError, match="'magnitude' is a built-in method"):
        methods.unregister("magnitude")


def test_data_free_is_the_methods_own_attribute(random_method):
    # Derived from each registered Method's `needs_data`, never a fixed list.
    assert set(methods.data_free()) == {"dense", "magnitude", "wt", "weight", "filter_l1"}
    line = pruning.removed_line("random_0.5_seed0", "random", 0.5, 80)
    assert line == "random_0.5_seed0: random removed 0.5000 of the weights (scored on 80 " \
        "reference images)"
    random_method.needs_data = False
    assert "random" in methods.data_free()
    assert pruning.removed_line("random_0.5_seed0", "random", 0.5, 80) == (
        "random_0.5_seed0: random removed 0.5000 of the weights")
    assert pruning.removed_line("weight_0.5_seed0", "weight", 0.5, 80, "units") == (
        "weight_0.5_seed0: weight removed 0.5000 of the units")


@pytest.mark.parametrize("first", methods.SHIPPED_MODULES)
def test_the_registry_order_is_the_same_whichever_method_module_is_imported_first(first):
    """Any method module can fill the registry (each imports only light modules):
    `--method`'s allowed list reads the same either way."""
    import json
    import subprocess
    import sys
    from conftest import ROOT
    code = (f"import json, sys; sys.path.insert(0, {ROOT!r})\n"
            f"import pie.compress.{first}\n"
            "from pie.compress import methods\n"
            "print(json.dumps(methods.names()))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == methods.names()
