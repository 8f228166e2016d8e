"""Global weight pruning: WT during training, SiPP sensitivity, weight masks."""
import numpy as np
import pytest

from pie.compress import criteria, pruning, training
from pie.models import builders

import tf_keras as keras


def test_global_keep_masks_remove_the_lowest_scores_of_all_layers_together():
    scores = {"a": np.array([[0.5, -0.1], [2.0, 0.0]]), "b": np.array([0.3, 0.2, -4.0, 0.0])}
    masks = pruning.global_keep_masks(scores, 0.5)  # 4 of 8 removed: |0|, |0|, 0.1, 0.2
    np.testing.assert_array_equal(masks["a"], [[True, False], [True, False]])
    np.testing.assert_array_equal(masks["b"], [True, False, True, False])
    assert masks["a"].shape == (2, 2)
    # The count is exact even when every score ties.
    tied = pruning.global_keep_masks({"a": np.zeros(7), "b": np.zeros(3)}, 0.3)
    assert sum(int((~m).sum()) for m in tied.values()) == 3
    with pytest.raises(pruning.PruningError, match=r"sparsity must be in \[0, 1\), got 1"):
        pruning.global_keep_masks(scores, 1.0)


def _data(shape, n=64, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, *shape).astype("float32"), np.arange(n) % 10


def test_wt_during_training_meets_the_overall_target_with_unequal_layers():
    keras.utils.set_random_seed(0)
    model = builders.build("small_cnn", (8, 8, 1), 10, width=4)
    names = pruning.prunable_layer_names(model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = pruning.make_schedule("polynomial", 0.75, begin_step=0, end_step=4,
                                     frequency=2, total_steps=8)
    x, y = _data((8, 8, 1))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[pruning.GlobalMagnitudePruning(schedule, names)])
    per_layer, overall = pruning.kernel_sparsity(model, names)
    pruning.check_overall_sparsity(overall, 0.75)
    assert abs(overall - 0.75) < 1 / sum(model.get_layer(n).kernel.shape.num_elements()
                                         for n in names)
    # One global threshold: the layers end at different sparsities (tfmot's would be equal).
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05, per_layer
    with pytest.raises(pruning.PruningError):
        pruning.check_sparsity(per_layer, 0.75)
    assert np.count_nonzero(model.get_layer("classifier").kernel.numpy() == 0) == 0


def test_wt_masks_are_one_threshold_over_every_layer():
    keras.utils.set_random_seed(1)
    model = builders.build("small_cnn", (8, 8, 1), 10, width=4)
    names = pruning.prunable_layer_names(model)
    before = {n: np.abs(model.get_layer(n).kernel.numpy()) for n in names}
    masks = training.prune_weights(model, "wt", 0.6, names)
    kept = np.concatenate([before[n][masks[n]] for n in names])
    removed = np.concatenate([before[n][~masks[n]] for n in names])
    assert removed.max() <= kept.min()
    for n in names:
        assert (model.get_layer(n).kernel.numpy()[~masks[n]] == 0).all()


def _sensitivity_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(2, 2, strides=2, padding="valid", activation="relu", name="c2")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(4, activation="relu", name="d1")(h)
    outputs = keras.layers.Dense(3, name="classifier")(h)
    return keras.Model(inputs, outputs)


def _rows(a, kernel_size, stride, pad):
    """The inputs each output position of a convolution sees: (rows, kh * kw * c)."""
    a = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = a.shape
    return np.array([a[s, i:i + kernel_size, j:j + kernel_size, :].reshape(-1)
                     for s in range(n)
                     for i in range(0, h - kernel_size + 1, stride)
                     for j in range(0, w - kernel_size + 1, stride)])


def _relative_sensitivity(rows, kernel):
    """Mean over rows of |c_ij| / (sum of |c_ik| of the same sign), one weight at a time."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    scores = np.zeros(flat.shape)
    for a in rows:
        for i in range(flat.shape[1]):
            c = a * flat[:, i]
            for j in range(len(c)):
                if c[j] != 0:
                    same = c[np.sign(c) == np.sign(c[j])]
                    scores[j, i] += abs(c[j]) / np.abs(same).sum()
    return (scores / len(rows)).reshape(kernel.shape)


def test_sipp_mean_sensitivity_is_the_relative_contribution_averaged_over_samples():
    model = _sensitivity_model()
    x = np.random.RandomState(3).randn(3, 6, 6, 2).astype("float32")  # signed inputs
    scores = criteria.weight_sensitivity(model, ["c1", "c2", "d1", "classifier"], x,
                                         batch_size=2)
    feeds = keras.Model(model.inputs, [model.get_layer(n).input for n in ("c2", "d1",
                                                                         "classifier")])
    a2, a3, a4 = [v.numpy().astype(np.float64) for v in feeds(x)]
    rows = {"c1": _rows(x.astype(np.float64), 3, 1, 1), "c2": _rows(a2, 2, 2, 0),
            "d1": a3, "classifier": a4}
    for name, layer_rows in rows.items():
        kernel = model.get_layer(name).kernel.numpy().astype(np.float64)
        np.testing.assert_allclose(scores[name], _relative_sensitivity(layer_rows, kernel),
                                   rtol=1e-6, atol=1e-12)
    # A unit's positive and negative shares each sum to 1 per sample: the Dense
    # classifier's scores, summed over its inputs, are 2 per unit when both signs occur.
    assert np.all(scores["classifier"].sum(axis=0) <= 2 + 1e-9)


def test_sipp_prunes_the_global_budget_and_the_mask_callback_holds_it():
    model = _sensitivity_model()
    names = ["c1", "c2", "d1"]
    x = np.random.RandomState(4).randn(16, 6, 6, 2).astype("float32")
    masks = training.prune_weights(model, "sipp", 0.5, names, x)
    total = sum(m.size for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(16) % 3, batch_size=4, epochs=1, verbose=0,
              callbacks=[pruning.WeightMaskCallback(masks)])
    per_layer, overall = pruning.kernel_sparsity(model, names)
    assert overall == pytest.approx(0.5, abs=1 / total)
    with pytest.raises(pruning.PruningError, match="unknown weight-pruning method 'snip'; "
                       "allowed: wt, sipp, sipp_mean"):
        training.prune_weights(model, "snip", 0.5, names, x)


def test_overall_sparsity_check_message():
    with pytest.raises(pruning.PruningError, match="measured overall sparsity 0.4900 misses "
                       "the target 0.5 by more than 0.5 points"):
        pruning.check_overall_sparsity(0.49, 0.5)
