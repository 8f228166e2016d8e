"""Tests of pie.compress.criteria against hand computations and independent references."""
import numpy as np
import pytest

from pie.compress import criteria as C

import tensorflow as tf  # noqa: E402  (after pie: Keras 2)
import tf_keras  # noqa: E402

layers = tf_keras.layers


def _mlp(seed=0, positive=False, use_bias=True, classes=3):
    """3 -> 5 (relu) -> dropout -> 4 (linear) -> ReLU layer -> classes."""
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([
        tf_keras.Input((3,)),
        layers.Dense(5, activation="relu", use_bias=use_bias, name="h1"),
        layers.Dropout(0.5, name="drop"),
        layers.Dense(4, use_bias=use_bias, name="h2"),
        layers.ReLU(name="relu2"),
        layers.Dense(classes, use_bias=use_bias, name="out"),
    ])
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(0.1, 1.0, w.shape) if positive and w.ndim == 2
               else rng.normal(0, 0.8, w.shape) for w in model.get_weights()]
    model.set_weights([w.astype(np.float32) for w in weights])
    return model


def _data(n=6, classes=3, seed=1, positive=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, (n, 3)) if positive else rng.normal(size=(n, 3))
    return x.astype(np.float32), rng.integers(0, classes, n)


def _numpy_mlp(model):
    """(kernel, bias) of every Dense layer as float64 numpy."""
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    return [(d.kernel.numpy().astype(np.float64),
             d.bias.numpy().astype(np.float64) if d.use_bias else 0.0) for d in dense]


def _numpy_loss(params, x, y, layer=None, perturb=None):
    """Summed cross-entropy; `perturb(z)` edits the pre-activation of hidden `layer`."""
    hidden = x.astype(np.float64)
    for index, (kernel, bias) in enumerate(params[:-1]):
        z = hidden @ kernel + bias
        if index == layer:
            z = perturb(z)
        hidden = np.maximum(z, 0.0)
    logits = hidden @ params[-1][0] + params[-1][1]
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].sum()


def _l2(values):
    return values / np.linalg.norm(values)


# ------------------------------------------------------------------------ registry


def test_registry():
    assert sorted(C.CRITERIA) == ["filter_l1", "grad", "lrp", "taylor", "weight"]
    assert C.get_criterion("filter_l1").per_layer
    assert not C.get_criterion("lrp").per_layer
    assert not C.get_criterion("weight").needs_data and C.get_criterion("grad").needs_data
    with pytest.raises(ValueError, match=r"^unknown criterion 'magnitude'; allowed: "
                                         r"filter_l1, grad, lrp, taylor, weight$"):
        C.get_criterion("magnitude")


def test_prunable_layers_exclude_the_classifier():
    model = _mlp()
    assert [layer.name for layer in C.prunable_layers(model)] == ["h1", "h2"]
    assert C.classifier_layer(model).name == "out"


# ---------------------------------------------------------------- data-free criteria


def test_weight_and_filter_l1_match_hand_computation():
    model = _mlp()
    scores = C.UnitScorer(model, ["weight", "filter_l1"]).score()
    for name in ("h1", "h2"):
        kernel = np.abs(model.get_layer(name).kernel.numpy().astype(np.float64))
        mean_abs = kernel.sum(axis=0) / kernel.shape[0]
        np.testing.assert_allclose(scores["weight"][name], mean_abs / mean_abs.sum(), rtol=1e-6)
        np.testing.assert_allclose(scores["filter_l1"][name], kernel.sum(axis=0), rtol=1e-6)


def test_weight_of_a_conv_layer_averages_over_the_kernel_window():
    inputs = tf_keras.Input((5, 5, 2))
    hidden = layers.Conv2D(3, 2, activation="relu", name="conv")(inputs)
    model = tf_keras.Model(inputs, layers.Dense(2)(layers.Flatten()(hidden)))
    kernel = np.abs(model.get_layer("conv").kernel.numpy()).reshape(-1, 3)
    expected = kernel.mean(axis=0) / kernel.mean(axis=0).sum()
    np.testing.assert_allclose(C.score_units(model, "weight")["conv"], expected, rtol=1e-6)


# ---------------------------------------------------------------- gradient criteria


def test_grad_and_taylor_match_finite_differences():
    model = _mlp(seed=2)
    x, y = _data(n=8, seed=3)
    params = _numpy_mlp(model)
    scores = C.UnitScorer(model, ["grad", "taylor"]).score(x, y)
    step = 1e-6
    for layer_index, name in enumerate(["h1", "h2"]):
        units = params[layer_index][0].shape[1]
        grad, taylor = np.zeros(units), np.zeros(units)
        for unit in range(units):
            one_hot = np.eye(units)[unit]

            def shifted(delta):
                return _numpy_loss(params, x, y, layer_index, lambda z: z + delta * one_hot)

            def scaled(eps):
                return _numpy_loss(params, x, y, layer_index,
                                   lambda z: z * (1.0 + eps * one_hot))

            # d/d(delta) of the summed loss = sum_n dl_n/dz_j; the criteria use means.
            grad[unit] = abs((shifted(step) - shifted(-step)) / (2 * step) / len(x))
            taylor[unit] = abs((scaled(step) - scaled(-step)) / (2 * step) / len(x))
        np.testing.assert_allclose(scores["grad"][name], _l2(grad), rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(scores["taylor"][name], _l2(taylor), rtol=2e-3, atol=1e-5)


def test_conv_grad_averages_over_samples_and_positions():
    tf_keras.utils.set_random_seed(4)
    inputs = tf_keras.Input((4, 4, 1))
    conv = layers.Conv2D(2, 2, activation="relu", name="conv")(inputs)
    hidden = layers.Dense(3, activation="relu", name="fc")(layers.Flatten()(conv))
    model = tf_keras.Model(inputs, layers.Dense(2, name="out")(hidden))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 2, 5)
    conv_layer = model.get_layer("conv")
    extractor = tf_keras.Model(model.inputs, conv_layer.output)
    z = extractor(x).numpy()  # relu(z); pre-activation recomputed below
    pre = tf.nn.convolution(x, conv_layer.kernel, padding="VALID").numpy() \
        + conv_layer.bias.numpy()
    np.testing.assert_allclose(np.maximum(pre, 0), z, atol=1e-6)
    fc, out = model.get_layer("fc"), model.get_layer("out")

    def loss(delta):
        hidden = np.maximum(pre.astype(np.float64) + delta, 0).reshape(len(x), -1)
        hidden = np.maximum(hidden @ fc.kernel.numpy() + fc.bias.numpy(), 0)
        logits = hidden @ out.kernel.numpy() + out.bias.numpy()
        logits = logits - logits.max(axis=1, keepdims=True)
        return -(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1))).sum()

    step = 1e-6
    positions = len(x) * pre.shape[1] * pre.shape[2]
    expected = np.array([abs(loss(step * np.eye(2)[j]) - loss(-step * np.eye(2)[j]))
                         / (2 * step) / positions for j in range(2)])
    np.testing.assert_allclose(C.score_units(model, "grad", x, y)["conv"], _l2(expected),
                               rtol=2e-3, atol=1e-5)


# --------------------------------------------------------------------------- LRP


def _numpy_lrp(params, x, y, eps=C.LRP_EPSILON):
    """z+ relevance at each hidden layer's output, written unit by unit."""
    activations = [x.astype(np.float64)]
    for kernel, bias in params[:-1]:
        activations.append(np.maximum(activations[-1] @ kernel + bias, 0))
    logits = activations[-1] @ params[-1][0] + params[-1][1]
    relevance = np.zeros_like(logits)
    relevance[np.arange(len(y)), y] = logits[np.arange(len(y)), y]
    found = []
    for layer in range(len(params) - 1, 0, -1):
        kernel, a = params[layer][0], activations[layer]
        lower = np.zeros_like(a)
        for n in range(len(x)):
            for j in range(kernel.shape[1]):
                denominator = sum(a[n, i] * max(kernel[i, j], 0) for i in range(len(a[n])))
                for i in range(len(a[n])):
                    lower[n, i] += a[n, i] * max(kernel[i, j], 0) / (denominator + eps) \
                        * relevance[n, j]
        relevance = lower
        found.insert(0, relevance)
    return found


def test_lrp_matches_a_unit_by_unit_reference():
    model = _mlp(seed=6)
    x, y = _data(n=5, seed=7)
    relevance = C.lrp_relevance(model, x, y)
    expected = _numpy_lrp(_numpy_mlp(model), x, y)
    for name, reference in zip(["h1", "h2"], expected):
        np.testing.assert_allclose(relevance[name], reference, rtol=1e-4, atol=1e-6)
    scores = C.score_units(model, "lrp", x, y)
    for name, reference in zip(["h1", "h2"], expected):
        total = reference.sum(axis=0)
        np.testing.assert_allclose(scores[name], total / abs(total.sum()), rtol=1e-4, atol=1e-6)


def test_lrp_conserves_relevance_in_a_bias_free_positive_network():
    model = _mlp(seed=8, positive=True, use_bias=False)
    x, y = _data(n=6, seed=9, positive=True)
    relevance = C.lrp_relevance(model, x, y)
    start = relevance["out"].sum(axis=1)
    assert np.all(start > 0)
    for name in ("h1", "h2"):
        np.testing.assert_allclose(relevance[name].sum(axis=1), start, rtol=1e-5)


def test_lrp_conserves_relevance_through_conv_pooling_and_flatten():
    tf_keras.utils.set_random_seed(10)
    inputs = tf_keras.Input((6, 6, 2))
    hidden = layers.Conv2D(3, 3, padding="same", use_bias=False, activation="relu",
                           name="conv1")(inputs)
    hidden = layers.MaxPooling2D(name="max")(hidden)
    hidden = layers.Conv2D(4, 2, use_bias=False, name="conv2")(hidden)
    hidden = layers.ReLU()(hidden)
    hidden = layers.AveragePooling2D(name="avg")(hidden)
    hidden = layers.Flatten()(hidden)
    hidden = layers.Dense(5, use_bias=False, activation="relu", name="fc")(hidden)
    model = tf_keras.Model(inputs, layers.Dense(3, use_bias=False, name="out")(hidden))
    model.set_weights([np.abs(w) + 0.05 for w in model.get_weights()])
    rng = np.random.default_rng(11)
    x = rng.uniform(0.1, 1.0, (4, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    relevance = C.lrp_relevance(model, x, y)
    start = relevance["out"].sum(axis=1)
    for name in ("conv1", "conv2", "fc"):
        per_sample = relevance[name].reshape(len(x), -1).sum(axis=1)
        np.testing.assert_allclose(per_sample, start, rtol=1e-5)


def test_lrp_max_pooling_is_winner_take_all():
    inputs = tf_keras.Input((2, 2, 1))
    hidden = layers.Conv2D(1, 1, use_bias=False, name="conv")(inputs)
    hidden = layers.MaxPooling2D()(hidden)
    hidden = layers.Flatten()(hidden)
    hidden = layers.Dense(1, use_bias=False, name="fc")(hidden)
    model = tf_keras.Model(inputs, layers.Dense(2, use_bias=False, name="out")(hidden))
    model.set_weights([np.ones((1, 1, 1, 1)), np.ones((1, 1)), np.array([[2.0, -1.0]])])
    x = np.array([[[[0.1], [0.7]], [[0.3], [0.2]]]], np.float32)
    relevance = C.lrp_relevance(model, x, np.array([0]))
    # Logit of class 0 = 2 * 0.7; all of it reaches the winning position.
    np.testing.assert_allclose(relevance["conv"][0, :, :, 0], [[0, 1.4], [0, 0]], atol=1e-6)


def test_lrp_folds_batch_norm_into_the_layer_before():
    tf_keras.utils.set_random_seed(12)
    model = tf_keras.Sequential([
        tf_keras.Input((3,)),
        layers.Dense(4, name="h1"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(),
        layers.Dense(3, activation="relu", name="h2"),
        layers.Dense(2, name="out"),
    ])
    bn = model.get_layer("bn")
    rng = np.random.default_rng(13)
    bn.set_weights([rng.uniform(-1.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4),
                    rng.uniform(0.5, 2.0, 4)])
    scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    shift = bn.beta.numpy() - bn.moving_mean.numpy() * scale
    folded = tf_keras.Sequential([
        tf_keras.Input((3,)),
        layers.Dense(4, activation="relu", name="h1"),
        layers.Dense(3, activation="relu", name="h2"),
        layers.Dense(2, name="out"),
    ])
    kernel, bias = model.get_layer("h1").get_weights()
    folded.get_layer("h1").set_weights([kernel * scale, bias * scale + shift])
    for name in ("h2", "out"):
        folded.get_layer(name).set_weights(model.get_layer(name).get_weights())
    x, y = _data(n=6, classes=2, seed=14)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    expected = C.score_units(folded, "lrp", x, y)
    actual = C.score_units(model, "lrp", x, y)
    for name in ("h1", "h2"):
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-4, atol=1e-6)


def test_lrp_rejects_unsupported_layers():
    inputs = tf_keras.Input((3,))
    first = layers.Dense(4, activation="relu", name="a")(inputs)
    second = layers.Dense(4, activation="relu", name="b")(first)
    merged = layers.Add(name="add")([first, second])
    branched = tf_keras.Model(inputs, layers.Dense(2)(merged))
    x, y = _data(n=2, classes=2)
    with pytest.raises(ValueError, match=r"^lrp needs a chain of layers \(no branches or "
                                         r"merges\); layer 'add' is not fed by the layer "
                                         r"before it$"):
        C.score_units(branched, "lrp", x, y)
    # The gradient criteria work on the branched graph.
    assert set(C.score_units(branched, "grad", x, y)) == {"a", "b"}
    leaky = tf_keras.Sequential([tf_keras.Input((3,)), layers.Dense(4, name="h"),
                                 layers.LeakyReLU(name="leaky"), layers.Dense(2)])
    with pytest.raises(ValueError, match=r"^lrp does not support layer 'leaky' \(LeakyReLU\); "
                                         r"supported: Dense, Conv2D, "):
        C.score_units(leaky, "lrp", x, y)
    late_bn = tf_keras.Sequential([tf_keras.Input((3,)), layers.Dense(4, activation="relu"),
                                   layers.BatchNormalization(name="late"), layers.Dense(2)])
    with pytest.raises(ValueError, match=r"^lrp: BatchNormalization 'late' must directly "
                                         r"follow a Dense or Conv2D layer without activation"):
        C.score_units(late_bn, "lrp", x, y)


def test_unsupported_activation_and_bad_samples():
    model = tf_keras.Sequential([tf_keras.Input((3,)),
                                 layers.Dense(4, activation="tanh", name="h"),
                                 layers.Dense(2)])
    x, y = _data(n=3, classes=2)
    with pytest.raises(ValueError, match=r"^hidden layer 'h' has activation 'tanh'; criteria "
                                         r"support relu or linear$"):
        C.score_units(model, "taylor", x, y)
    relu_model = _mlp()
    with pytest.raises(ValueError, match=r"^reference samples x and y are required for this "
                                         r"criterion$"):
        C.score_units(relu_model, "grad")
    with pytest.raises(ValueError, match=r"^y must be class ids in \[0, 3\), got 0\.\.7$"):
        C.score_units(relu_model, "grad", x, np.array([0, 1, 7]))
    with pytest.raises(ValueError, match=r"^x has sample shape \(2,\), the model expects "
                                         r"\(3,\)$"):
        C.score_units(relu_model, "grad", np.zeros((3, 2)), np.array([0, 1, 2]))


def test_scorer_follows_new_weights_and_batches_add_up():
    model = _mlp(seed=15)
    x, y = _data(n=7, seed=16)
    scorer = C.UnitScorer(model, ["lrp", "grad", "taylor"], batch_size=3)
    model.set_weights(_mlp(seed=17).get_weights())
    reused = scorer.score(x, y)
    fresh = C.UnitScorer(_mlp(seed=17), ["lrp", "grad", "taylor"], batch_size=100).score(x, y)
    for criterion in fresh:
        for name in fresh[criterion]:
            np.testing.assert_allclose(reused[criterion][name], fresh[criterion][name],
                                       rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------- ranking and masks


def test_unit_ranking_selection_and_ties():
    scores = {"a": np.array([0.5, 0.1, 0.9]), "b": np.array([0.2, 0.7])}
    np.testing.assert_array_equal(C.unit_ranking(scores), [2, 4, 0, 3, 1])
    mask = C.select_pruned_units(scores, count=2)
    np.testing.assert_array_equal(mask["a"], [True, False, True])
    np.testing.assert_array_equal(mask["b"], [False, True])
    per_layer = C.select_pruned_units(scores, fraction=0.5, per_layer=True)
    # round(1.5) = 2 of layer a, round(1.0) = 1 of layer b.
    np.testing.assert_array_equal(per_layer["a"], [False, False, True])
    np.testing.assert_array_equal(per_layer["b"], [False, True])
    ties = {"a": np.zeros(50)}
    first = C.select_pruned_units(ties, count=10, seed=1)["a"]
    assert (~first).sum() == 10
    np.testing.assert_array_equal(first, C.select_pruned_units(ties, count=10, seed=1)["a"])
    assert not np.array_equal(first, C.select_pruned_units(ties, count=10, seed=2)["a"])


def test_selection_errors():
    scores = {"a": np.array([0.5, 0.1])}
    with pytest.raises(ValueError, match=r"^give exactly one of fraction and count$"):
        C.select_pruned_units(scores)
    with pytest.raises(ValueError, match=r"^fraction must be a number in \[0, 1\), got 1\.0$"):
        C.select_pruned_units(scores, fraction=1.0)
    with pytest.raises(ValueError, match=r"^count must be an integer in \[0, 2\), got 2$"):
        C.select_pruned_units(scores, count=2)
    with pytest.raises(ValueError, match=r"^scores of layer 'a' contain NaN or infinity$"):
        C.select_pruned_units({"a": np.array([np.nan])}, count=0)


def test_overlaps():
    ranking = np.arange(10)
    assert C.first_k_overlap(ranking, ranking, 3) == 1.0
    assert C.last_k_overlap(ranking, ranking, 3) == 1.0
    assert C.first_k_overlap(ranking, ranking[::-1], 5) == 0.0
    other = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert C.first_k_overlap(ranking, other, 4) == 0.5  # {0,1} of {0,1,2,3}
    assert C.last_k_overlap(ranking, other, 4) == 0.25  # {6} of {3,4,5,6} vs {6,7,8,9}
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 10\], got 11$"):
        C.first_k_overlap(ranking, ranking, 11)
    with pytest.raises(ValueError, match=r"^rankings must be 1-D and of equal length"):
        C.last_k_overlap(ranking, ranking[:5], 2)


def _outputs(model, name, x):
    return tf_keras.Model(model.inputs, model.get_layer(name).output)(x).numpy()


def test_pruned_units_output_exactly_zero():
    model = _mlp(seed=18)
    x, _ = _data(n=20, seed=19)
    before = {name: _outputs(model, name, x) for name in ("h1", "h2")}
    mask = {"h1": np.array([True, False, True, True, False]),
            "h2": np.array([False, True, True, True])}
    C.apply_unit_mask(model, mask)
    h1 = _outputs(model, "h1", x)
    assert np.all(h1[:, ~mask["h1"]] == 0.0)
    np.testing.assert_array_equal(h1[:, mask["h1"]], before["h1"][:, mask["h1"]])
    assert np.all(_outputs(model, "relu2", x)[:, ~mask["h2"]] == 0.0)
    assert C.mask_summary(mask) == {"h1": 0.4, "h2": 0.25, "overall": 3 / 9}


def test_pruned_filters_before_batch_norm_output_zero():
    inputs = tf_keras.Input((5, 5, 2))
    hidden = layers.Conv2D(3, 3, name="conv")(inputs)
    hidden = layers.BatchNormalization(name="bn")(hidden)
    hidden = layers.ReLU(name="relu")(hidden)
    model = tf_keras.Model(inputs, layers.Dense(2)(layers.Flatten()(hidden)))
    model.get_layer("bn").set_weights([np.ones(3), np.full(3, 0.5), np.full(3, -1.0),
                                       np.ones(3)])
    C.apply_unit_mask(model, {"conv": np.array([True, False, True])})
    x = np.random.default_rng(20).normal(size=(4, 5, 5, 2)).astype(np.float32)
    assert np.all(_outputs(model, "bn", x)[..., 1] == 0.0)
    assert np.all(_outputs(model, "bn", x)[..., 0] != 0.0)


def test_mask_callback_keeps_units_at_zero_while_training():
    model = _mlp(seed=21)
    x, y = _data(n=32, seed=22)
    mask = {"h1": np.array([True, False, True, True, True]), "h2": np.ones(4, bool)}
    C.apply_unit_mask(model, mask)
    before = model.get_layer("h1").kernel.numpy().copy()
    model.compile(tf_keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.1),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[C.UnitMaskCallback(mask)])
    after = model.get_layer("h1").kernel.numpy()
    assert np.all(after[:, 1] == 0.0) and model.get_layer("h1").bias.numpy()[1] == 0.0
    assert not np.allclose(after[:, 0], before[:, 0])


def test_mask_errors():
    model = _mlp()
    with pytest.raises(ValueError, match=r"^mask names layer 'out', which is not a prunable "
                                         r"layer; prunable: h1, h2$"):
        C.apply_unit_mask(model, {"out": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"^mask of layer 'h1' must be a bool array of shape "
                                         r"\(5,\), got int64 \(5,\)$"):
        C.apply_unit_mask(model, {"h1": np.ones(5, np.int64)})


def test_prune_units_end_to_end():
    model = _mlp(seed=23)
    x, y = _data(n=9, seed=24)
    mask = C.prune_units(model, "taylor", 1 / 3, x, y, seed=0)
    assert sum((~m).sum() for m in mask.values()) == 3
    kernel = model.get_layer("h1").kernel.numpy()
    assert np.all(kernel[:, ~mask["h1"]] == 0.0)
    mask = C.prune_units(_mlp(seed=23), "filter_l1", 0.5)
    assert [(~m).sum() for m in mask.values()] == [2, 2]


# ------------------------------------------------------------- SiPP (torchprune's SiPPNet)


def _sipp_network():
    """Input 3x3x2 -> Conv2D 2x2 (2 filters, linear: signed outputs) -> Dense 3 (relu)
    -> Dense 2 classifier, with hand-made weights (zeros and both signs)."""
    inputs = tf_keras.Input((3, 3, 2))
    h = layers.Conv2D(2, 2, padding="valid", name="conv")(inputs)
    h = layers.Flatten()(h)
    h = layers.Dense(3, activation="relu", name="hidden")(h)
    model = tf_keras.Model(inputs, layers.Dense(2, name="classifier")(h))
    conv = np.array([0.5, -1.0, 0.0, 2.0, -0.5, 1.5, 1.0, -2.0,
                     0.25, 0.75, -1.25, 0.5, 1.0, 0.0, -0.75, 1.25]).reshape(2, 2, 2, 2)
    hidden = np.array([[1.0, -0.5, 0.25], [-1.5, 0.75, 0.5], [0.5, 1.0, -1.0],
                       [0.0, -0.25, 1.5], [2.0, 0.5, -0.5], [-1.0, 1.25, 0.0],
                       [0.75, -1.0, 1.0], [0.25, 0.0, -2.0]])
    classifier = np.array([[1.0, -1.0], [-0.5, 2.0], [1.5, 0.25]])
    model.set_weights([w.astype(np.float32) for w in (
        conv, np.array([0.1, -0.2]), hidden, np.array([0.3, -0.1, 0.2]), classifier,
        np.array([0.0, 0.5]))])
    return model


def _sipp_inputs():
    """Four hand-made samples with negative values (so the a+ / a- split matters)."""
    values = np.array([1.0, -2.0, 0.5, 0.0, -1.0, 3.0, 2.0, -0.5, 1.5,
                       -1.5, 0.25, 1.0, -3.0, 2.5, 0.0, 1.0, -0.75, 0.5])
    x = np.stack([values, -values, np.roll(values, 5), np.abs(values)])
    return x.reshape(4, 3, 3, 2).astype(np.float32)


def _numpy_kernel_inputs(model, x):
    """Each layer's kernel input per sample and position, from a numpy forward pass."""
    conv, conv_bias, hidden, hidden_bias, _, _ = [w.astype(np.float64)
                                                  for w in model.get_weights()]
    x = x.astype(np.float64)
    patches = np.array([[x[s, i:i + 2, j:j + 2, :].reshape(-1) for i in range(2)
                         for j in range(2)] for s in range(len(x))])  # (s, 4 positions, 8)
    conv_out = patches @ conv.reshape(8, 2) + conv_bias  # linear activation
    flat = conv_out.reshape(len(x), 1, 8)  # Flatten of (2, 2, 2), row-major
    hidden_out = np.maximum(flat @ hidden + hidden_bias, 0.0)
    return {"conv": patches, "hidden": flat, "classifier": hidden_out}


def _numpy_sippnet(kernel, inputs):
    """The SiPPNet rule, one weight at a time: a+ and a- as separate samples, the share
    of the same-sign total, mean over positions, max over samples."""
    kernel = kernel.reshape(-1, kernel.shape[-1])
    best = np.zeros(kernel.shape)
    for sample in inputs:
        for p in (np.maximum(sample, 0.0), np.maximum(-sample, 0.0)):
            score = np.zeros(kernel.shape)
            for row in p:  # one output position
                for i in range(kernel.shape[1]):
                    for j in range(kernel.shape[0]):
                        w = kernel[j, i]
                        if w == 0:
                            continue
                        same = kernel[:, i] * np.sign(w) > 0
                        total = np.sum(np.abs(kernel[same, i]) * row[same])
                        if total > 0:
                            score[j, i] += abs(w) * row[j] / total
            best = np.maximum(best, score / len(p))
    return best


def test_sipp_mask_is_the_sippnet_rule_computed_directly(monkeypatch):
    from pie.compress import pruning, training
    model = _sipp_network()
    x = _sipp_inputs()
    names = ["conv", "hidden", "classifier"]
    inputs = _numpy_kernel_inputs(model, x)
    expected = {name: _numpy_sippnet(model.get_layer(name).kernel.numpy().astype(np.float64),
                                     inputs[name]) for name in names}
    scores = C.sipp_sensitivity(model, names, x, batch_size=3)  # two batches: running max
    for name in names:
        # float32 activations inside the model: agreement to float32 precision
        np.testing.assert_allclose(scores[name].reshape(expected[name].shape), expected[name],
                                   rtol=1e-6, atol=1e-9)
    # One sample at a time (what a wide layer gets) gives the same maxima.
    monkeypatch.setattr(C, "SIPP_CHUNK_ELEMENTS", 1)
    one_by_one = C.sipp_sensitivity(model, names, x, batch_size=3)
    for name in names:
        np.testing.assert_array_equal(one_by_one[name], scores[name])
    # The split matters: the earlier mean score (sign of w x a) ranks differently.
    mean_scores = C.weight_sensitivity(model, names, x)
    assert not np.allclose(mean_scores["conv"], scores["conv"])
    # One global top-k over every layer, classifier included; the prune ratio counts
    # biases: 0.55 x (16 + 2 + 24 + 3 + 6 + 2 parameters) = 29.15 -> 29 of 46 weights
    # (every score below 1; the 17 weights alone in their sign group score exactly 1).
    removed = int(round(0.55 * (16 + 2 + 24 + 3 + 6 + 2)))
    assert np.sum(np.concatenate([e.ravel() for e in expected.values()]) < 1 - 1e-9) == removed
    values = np.concatenate([expected[name].ravel() for name in names])
    keep = np.ones(values.size, bool)
    keep[np.argsort(values, kind="stable")[:removed]] = False  # ties: lower layer, index
    masks = training.prune_weights(model, "sipp", 0.55, names, x, count_biases=True)
    got = np.concatenate([masks[name].ravel() for name in names])
    np.testing.assert_array_equal(got, keep)
    assert int((~got).sum()) == removed == 29
    for name in names:
        assert (model.get_layer(name).kernel.numpy()[~masks[name]] == 0).all()
    assert pruning.kernel_sparsity(model, names)[1] == pytest.approx(29 / 46)


def test_sipp_removed_weights_counts_biases_and_keeps_one_weight():
    model = _sipp_network()
    assert C.sipp_removed_weights(model, ["conv", "hidden"], 0.5) == round(0.5 * (16 + 2 + 24 + 3))
    assert C.sipp_removed_weights(model, ["classifier"], 0.99) == 5  # never all 6 weights
    assert set(C.WEIGHT_SENSITIVITIES) == {"sipp", "sipp_mean"}
