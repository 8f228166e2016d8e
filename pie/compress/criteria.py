"""Unit-pruning criteria: scores for each hidden neuron and filter of a network.

The criteria of Yeom et al., "Pruning by Explaining", plus the filter-norm
baseline of Li et al. Every hidden `Dense` neuron and `Conv2D` filter of a
`tf_keras` model is a *unit*; the classifier (the last Dense layer) is never
pruned. A criterion scores every unit from the weights alone or from a batch of
reference samples `(x, y)`; the lowest-scored units are pruned by zeroing their
incoming weights and bias, so a pruned ReLU unit outputs exactly zero.

With `z_j` the pre-activation of unit j, `L` the cross-entropy and `R_j` the LRP
relevance, summed or averaged over the reference samples (and over positions for
a convolution):

| name        | score                                         | normalised per layer | ranking   |
|-------------|-----------------------------------------------|----------------------|-----------|
| `weight`    | mean_i abs(W_ij) over incoming weights        | divided by the sum   | global    |
| `grad`      | abs(mean dL/dz_j)                             | divided by the L2 norm | global  |
| `taylor`    | abs(mean z_j dL/dz_j)                         | divided by the L2 norm | global  |
| `lrp`       | sum R_j, z+ rule from the true-class logit    | divided by abs(sum)  | global    |
| `filter_l1` | sum_i abs(W_ij)                               | none                 | per layer |

Typical use (what a training stage does):

    mask = prune_units(model, "lrp", fraction=0.3, x=x_ref, y=y_ref, seed=0)
    model.fit(..., callbacks=[UnitMaskCallback(mask)])  # pruned units stay at zero

`sipp_sensitivity` scores single kernel weights instead of units (SiPP, the
data-informed weight pruning of Lost in Pruning, as torchprune's `SiPPNet`): each
weight's share |w_ij| p_j of its unit's input through the weights of its own sign,
with signed inputs split into a+ and a- samples, averaged over a convolution's
positions and maximised over reference samples; ranked globally by
`pie.compress.pruning.global_keep_masks`. `weight_sensitivity` is the earlier
mean-over-samples score, registered as `sipp_mean` (`WEIGHT_SENSITIVITIES`).

`UnitScorer` computes several criteria in one forward and backward pass and can
be reused after `model.set_weights`, which the toy study relies on for speed.

LRP needs the model to be a chain of layers (Sequential, or a functional model
without branches). Supported there: Dense, Conv2D, Flatten, Reshape, Dropout,
ReLU (as activation or layer), MaxPooling2D and GlobalMaxPooling2D (relevance goes
to the winning input: winner-take-all), AveragePooling2D and
GlobalAveragePooling2D (relevance shared in proportion to the inputs), and
BatchNormalization directly after a Dense or Conv2D layer (folded into that
layer's weights). `grad`, `taylor`, `weight` and `filter_l1` work on any
single-input, single-output functional graph whose hidden Dense/Conv2D layers use
a ReLU or linear activation.
"""
import numpy as np
import tensorflow as tf
import tf_keras

# The criteria's names and needs (criteria.CRITERIA), readable without TensorFlow.
from pie.compress.criteria_names import CRITERIA, Criterion, get_criterion  # noqa: F401

LRP_EPSILON = 1e-9
# Dense and Conv2D proper: their subclasses (Conv2DTranspose, ...) have other unit semantics.
UNIT_LAYER_TYPES = (tf_keras.layers.Dense, tf_keras.layers.Conv2D)
HIDDEN_ACTIVATIONS = ("relu", "linear")
CLASSIFIER_ACTIVATIONS = ("softmax", "linear")


# ------------------------------------------------------------------ model structure


def _is_unit_layer(layer):
    return type(layer) in UNIT_LAYER_TYPES


def _activation_name(activation):
    return tf_keras.activations.serialize(activation)


def _check_model(model):
    if not isinstance(model, tf_keras.Model):
        raise ValueError(
            f"model must be a tf_keras Model (Sequential or functional), got "
            f"{type(model).__name__}")
    if not model.built or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            "model must be a built Sequential or functional tf_keras model "
            "(give it an Input or an input_shape)")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"model must have one input and one output, got {len(model.inputs)} "
            f"and {len(model.outputs)}")
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            raise ValueError(
                f"nested model {layer.name!r} is not supported; build the network "
                "from plain layers")


def classifier_layer(model):
    """The last Dense layer: its units are the class logits, never pruned."""
    _check_model(model)
    unit_layers = [layer for layer in model.layers if _is_unit_layer(layer)]
    if not unit_layers or not isinstance(unit_layers[-1], tf_keras.layers.Dense):
        raise ValueError("model must end with a Dense classifier layer")
    return unit_layers[-1]


def prunable_layers(model):
    """Every hidden Dense / Conv2D layer, in the model's (topological) order."""
    classifier = classifier_layer(model)
    layers = [layer for layer in model.layers
              if _is_unit_layer(layer) and layer is not classifier]
    if not layers:
        raise ValueError("model has no hidden Dense or Conv2D layer to prune")
    return layers


def num_units(layer):
    """Neurons of a Dense layer, filters of a Conv2D layer."""
    return int(layer.kernel.shape[-1])


def _following_layer(model, layer):
    """The only layer consuming `layer`'s output, or None."""
    consumers = [other for other in model.layers
                 if not isinstance(other, tf_keras.layers.InputLayer)
                 and _single_input(other) is layer.output]
    return consumers[0] if len(consumers) == 1 else None


def _single_input(layer):
    try:
        return layer.input
    except (AttributeError, RuntimeError, ValueError):
        return None


def _following_batch_norm(model, layer):
    follower = _following_layer(model, layer)
    if isinstance(follower, tf_keras.layers.BatchNormalization):
        return follower
    return None


def _check_hidden_activations(layers):
    for layer in layers:
        name = _activation_name(layer.activation)
        if name not in HIDDEN_ACTIVATIONS:
            raise ValueError(
                f"hidden layer {layer.name!r} has activation {name!r}; criteria support "
                f"{' or '.join(HIDDEN_ACTIVATIONS)}")


def _check_classifier(model, classifier):
    name = _activation_name(classifier.activation)
    if name not in CLASSIFIER_ACTIVATIONS:
        raise ValueError(
            f"classifier {classifier.name!r} has activation {name!r}; allowed: "
            f"{', '.join(CLASSIFIER_ACTIVATIONS)}")
    index = model.layers.index(classifier)
    for layer in model.layers[index + 1:]:
        is_softmax = isinstance(layer, tf_keras.layers.Softmax) or (
            isinstance(layer, tf_keras.layers.Activation)
            and _activation_name(layer.activation) in CLASSIFIER_ACTIVATIONS)
        if not is_softmax:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) after the classifier "
                f"{classifier.name!r} is not supported; only a softmax may follow it")


def _layer_chain(model):
    """The layers as a chain, each fed by the previous one; error otherwise."""
    chain = [layer for layer in model.layers
             if not isinstance(layer, tf_keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in chain:
        if _single_input(layer) is not previous:
            raise ValueError(
                f"lrp needs a chain of layers (no branches or merges); layer "
                f"{layer.name!r} is not fed by the layer before it")
        previous = layer.output
    return chain


def _is_relu_layer(layer):
    if isinstance(layer, tf_keras.layers.ReLU):
        return (layer.max_value is None and float(layer.negative_slope) == 0.0
                and float(layer.threshold) == 0.0)
    if isinstance(layer, tf_keras.layers.Activation):
        return _activation_name(layer.activation) in HIDDEN_ACTIVATIONS
    return False


_PASS_THROUGH_TYPES = (tf_keras.layers.Dropout,)
_RESHAPE_TYPES = (tf_keras.layers.Flatten, tf_keras.layers.Reshape)
_POOL_TYPES = (tf_keras.layers.MaxPooling2D, tf_keras.layers.AveragePooling2D,
               tf_keras.layers.GlobalMaxPooling2D, tf_keras.layers.GlobalAveragePooling2D)
LRP_LAYER_TYPES = ("Dense", "Conv2D", "Flatten", "Reshape", "Dropout", "ReLU",
                   "Activation(relu|linear)", "MaxPooling2D", "AveragePooling2D",
                   "GlobalMaxPooling2D", "GlobalAveragePooling2D",
                   "BatchNormalization (after Dense/Conv2D)")


def _lrp_plan(model, classifier):
    """Checks that LRP can run backwards through the chain up to the classifier."""
    chain = _layer_chain(model)
    stop = chain.index(classifier)
    for position, layer in enumerate(chain[:stop]):
        if _is_unit_layer(layer) or _is_relu_layer(layer) or isinstance(
                layer, _PASS_THROUGH_TYPES + _RESHAPE_TYPES + _POOL_TYPES):
            continue
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            before = chain[position - 1] if position else None
            if not (before is not None and _is_unit_layer(before)
                    and _activation_name(before.activation) == "linear"):
                raise ValueError(
                    f"lrp: BatchNormalization {layer.name!r} must directly follow a Dense "
                    "or Conv2D layer without activation (it is folded into that layer)")
            continue
        raise ValueError(
            f"lrp does not support layer {layer.name!r} ({type(layer).__name__}); "
            f"supported: {', '.join(LRP_LAYER_TYPES)}")
    return chain


def _batch_norm_scale(batch_norm):
    """Per-channel factor gamma / sqrt(var + eps) of an inference-mode BatchNorm."""
    scale = tf.math.rsqrt(batch_norm.moving_variance + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * batch_norm.gamma
    return scale


def _logits_from_input(classifier, inputs):
    """The classifier's pre-activation, whatever activation it applies."""
    logits = tf.tensordot(inputs, classifier.kernel, [[inputs.shape.rank - 1], [0]])
    if classifier.use_bias:
        logits = logits + classifier.bias
    return logits


def _zplus_backward(layer, inputs, relevance, scale=None):
    """Relevance at `inputs` of a Dense/Conv2D layer by the z+ rule (no bias)."""
    kernel = layer.kernel if scale is None else layer.kernel * scale
    positive = tf.nn.relu(kernel)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        if isinstance(layer, tf_keras.layers.Conv2D):
            z = layer.convolution_op(inputs, positive)
        else:
            z = tf.tensordot(inputs, positive, [[inputs.shape.rank - 1], [0]])
    ratio = relevance / (z + LRP_EPSILON)
    return inputs * tape.gradient(z, inputs, output_gradients=ratio)


def _pool_backward(layer, inputs, relevance):
    """Max pooling: all to the winner; average pooling: in proportion to the inputs."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        pooled = layer(inputs)
    ratio = relevance / (pooled + LRP_EPSILON)
    return inputs * tape.gradient(pooled, inputs, output_gradients=ratio)


# ------------------------------------------------------------------------ scoring


def _check_samples(model, x, y):
    if x is None or y is None:
        raise ValueError("reference samples x and y are required for this criterion")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of samples, got shape {x.shape}")
    expected = tuple(model.inputs[0].shape[1:])
    if any(e is not None and e != s for e, s in zip(expected, x.shape[1:])) \
            or len(expected) != x.ndim - 1:
        raise ValueError(
            f"x has sample shape {x.shape[1:]}, the model expects {expected}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"y must be integer class ids of shape ({len(x)},), got {y.dtype} {y.shape}")
    classes = int(model.outputs[0].shape[-1])
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"y must be class ids in [0, {classes}), got {y.min()}..{y.max()}")
    return x.astype(model.inputs[0].dtype.as_numpy_dtype), y.astype(np.int64)


def _normalise(values, how):
    if how == "l1":
        total = np.sum(values)
    elif how == "l2":
        total = np.sqrt(np.sum(values ** 2))
    else:  # "abs_sum": keep the sign of each unit's relevance
        total = abs(np.sum(values))
    return values / total if total > 0 else values


def weight_scores(model):
    """`weight`: mean absolute incoming weight per unit, L1-normalised per layer."""
    scores = {}
    for layer in prunable_layers(model):
        kernel = np.abs(layer.kernel.numpy()).reshape(-1, num_units(layer))
        scores[layer.name] = _normalise(kernel.mean(axis=0).astype(np.float64), "l1")
    return scores


def filter_l1_scores(model):
    """`filter_l1`: L1 norm of each neuron's or filter's incoming weights."""
    return {layer.name: np.abs(layer.kernel.numpy()).reshape(-1, num_units(layer))
            .sum(axis=0).astype(np.float64) for layer in prunable_layers(model)}


_WEIGHT_ONLY = {"weight": weight_scores, "filter_l1": filter_l1_scores}


class UnitScorer:
    """Scores the units of `model` with several criteria in one pass per batch.

    The traced function reads the model's variables, so after `model.set_weights`
    the same scorer scores the new weights without retracing.

    Args:
      model: a built tf_keras Sequential or functional model.
      criteria: names from `CRITERIA`.
      batch_size: reference samples per forward/backward pass.
    """

    def __init__(self, model, criteria, batch_size=512):
        _check_model(model)
        if isinstance(criteria, str):
            criteria = [criteria]
        criteria = list(criteria)
        if not criteria:
            raise ValueError("criteria must name at least one criterion")
        for name in criteria:
            get_criterion(name)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.criteria = criteria
        self.batch_size = int(batch_size)
        self.layers = prunable_layers(model)
        self.classifier = classifier_layer(model)
        self._data_criteria = [c for c in criteria if CRITERIA[c].needs_data]
        self._statistics = None
        if self._data_criteria:
            _check_hidden_activations(self.layers)
            _check_classifier(model, self.classifier)
            self._build(model)

    @property
    def needs_data(self):
        return bool(self._data_criteria)

    def _build(self, model):
        use_lrp = "lrp" in self._data_criteria
        self._chain = _lrp_plan(model, self.classifier) if use_lrp else None
        if use_lrp:
            tapped = self._chain[:self._chain.index(self.classifier)]
        else:
            tapped = list(self.layers)
            feeding = _single_input(self.classifier)
            tapped += [layer for layer in model.layers
                       if layer.output is feeding and layer not in tapped]
        self._tapped = tapped
        outputs = [layer.output for layer in tapped] or [model.inputs[0]]
        self._forward = tf_keras.Model(model.inputs, outputs)
        self._relu = {layer.name: _activation_name(layer.activation) == "relu"
                      for layer in self.layers}
        self._batch_norm = {layer.name: _following_batch_norm(model, layer)
                            for layer in self.layers}
        signature = [tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]),
                                   model.inputs[0].dtype),
                     tf.TensorSpec((None,), tf.int64)]
        self._statistics = tf.function(self._batch_statistics, input_signature=signature)

    def _classifier_input(self, x, activations):
        feeding = _single_input(self.classifier)
        if feeding is self.model.inputs[0]:
            return x
        for layer, value in zip(self._tapped, activations):
            if layer.output is feeding:
                return value
        raise AssertionError("classifier input was not tapped")

    def _batch_statistics(self, x, y):
        """Sums over the batch (and positions) of dL/dz, z dL/dz and LRP relevance."""
        with tf.GradientTape() as tape:
            activations = self._forward(x, training=False)
            if not isinstance(activations, (list, tuple)):
                activations = [activations]
            logits = _logits_from_input(self.classifier, self._classifier_input(x, activations))
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        outputs = {layer.name: activations[self._tapped.index(layer)] for layer in self.layers}
        grads = tape.gradient(loss, [outputs[layer.name] for layer in self.layers])
        sums = {}
        for layer, grad in zip(self.layers, grads):
            out = outputs[layer.name]
            if self._relu[layer.name]:
                # out = relu(z): dL/dz = dL/dout where z > 0; z dL/dz = out dL/dout.
                grad = grad * tf.cast(out > 0, grad.dtype)
            axes = list(range(out.shape.rank - 1))
            sums[("grad", layer.name)] = tf.reduce_sum(grad, axis=axes)
            sums[("taylor", layer.name)] = tf.reduce_sum(out * grad, axis=axes)
            sums[("positions", layer.name)] = tf.cast(
                tf.reduce_prod(tf.shape(out)[:-1]), tf.float32)
        if self._chain is not None:
            relevance = self._lrp(x, y, activations, logits)
            for layer in self.layers:
                axes = list(range(relevance[layer.name].shape.rank - 1))
                sums[("lrp", layer.name)] = tf.reduce_sum(relevance[layer.name], axis=axes)
        return sums

    def _lrp(self, x, y, activations, logits):
        """Per-sample relevance at each prunable layer's output (and the logits)."""
        classes = tf.shape(logits)[-1]
        relevance = tf.one_hot(y, classes, dtype=logits.dtype) * logits
        found = {self.classifier.name: relevance}
        stop = self._chain.index(self.classifier)
        inputs = [x] + list(activations)  # inputs[i] feeds chain[i]
        relevance = _zplus_backward(self.classifier, inputs[stop], relevance)
        remaining = {layer.name for layer in self.layers}
        scale = None
        for position in range(stop - 1, -1, -1):
            if not remaining:
                break
            layer = self._chain[position]
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                scale = _batch_norm_scale(layer)
            elif _is_unit_layer(layer):
                found[layer.name] = relevance
                remaining.discard(layer.name)
                if remaining:
                    relevance = _zplus_backward(layer, inputs[position], relevance, scale)
                scale = None
            elif isinstance(layer, _RESHAPE_TYPES):
                relevance = tf.reshape(relevance, tf.shape(inputs[position]))
            elif isinstance(layer, _POOL_TYPES):
                relevance = _pool_backward(layer, inputs[position], relevance)
            # Dropout and ReLU pass relevance through unchanged.
        return found

    def score(self, x=None, y=None):
        """{criterion: {layer name: float64 scores of shape (units,)}}."""
        results = {}
        for name in self.criteria:
            if name in _WEIGHT_ONLY:
                results[name] = _WEIGHT_ONLY[name](self.model)
        if not self._data_criteria:
            return results
        x, y = _check_samples(self.model, x, y)
        totals = {}
        for start in range(0, len(x), self.batch_size):
            sums = self._statistics(tf.constant(x[start:start + self.batch_size]),
                                    tf.constant(y[start:start + self.batch_size]))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value.numpy().astype(np.float64)
        for name in self._data_criteria:
            results[name] = {}
            for layer in self.layers:
                total = totals[(name, layer.name)]
                if name == "lrp":
                    results[name][layer.name] = _normalise(total, "abs_sum")
                else:
                    mean = total / totals[("positions", layer.name)]
                    results[name][layer.name] = _normalise(np.abs(mean), "l2")
        return {name: results[name] for name in self.criteria}


def score_units(model, criterion, x=None, y=None, batch_size=512):
    """Scores of one criterion: {layer name: float64 array (units,)}."""
    return UnitScorer(model, [criterion], batch_size).score(x, y)[criterion]


def lrp_relevance(model, x, y):
    """Per-sample LRP z+ relevance: {layer name: array (n, ..., units)}.

    Holds every prunable layer's output relevance and, under the classifier's
    name, the starting relevance (the true-class logit, zero elsewhere).
    """
    scorer = UnitScorer(model, ["lrp"])
    x, y = _check_samples(model, x, y)
    x = tf.constant(x)
    activations = scorer._forward(x, training=False)
    if not isinstance(activations, (list, tuple)):
        activations = [activations]
    logits = _logits_from_input(scorer.classifier, scorer._classifier_input(x, activations))
    found = scorer._lrp(x, tf.constant(y), activations, logits)
    return {name: value.numpy() for name, value in found.items()}


# ---------------------------------------------------------------- ranking, masks


def _check_scores(scores):
    if not isinstance(scores, dict) or not scores:
        raise ValueError("scores must be a non-empty dict {layer name: scores}")
    for name, values in scores.items():
        values = np.asarray(values)
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(f"scores of layer {name!r} must be a non-empty 1-D array")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"scores of layer {name!r} contain NaN or infinity")


def unit_ranking(scores, seed=0):
    """Global unit ids (positions in the layers' concatenation), most important first.

    Ties (units no reference sample activates score exactly 0 under `grad`,
    `taylor` and `lrp`) are broken by a random order drawn from `seed`, so they
    do not all fall in one layer.
    """
    _check_scores(scores)
    values = np.concatenate([np.asarray(v, np.float64) for v in scores.values()])
    tie_break = np.random.default_rng(seed).permutation(len(values))
    return np.lexsort((tie_break, -values))


def _validate_amount(total, fraction, count):
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not 0 <= fraction < 1:
            raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
        return int(round(fraction * total))
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) \
            or not 0 <= count < total:
        raise ValueError(f"count must be an integer in [0, {total}), got {count!r}")
    return int(count)


def select_pruned_units(scores, *, fraction=None, count=None, per_layer=False, seed=0):
    """The mask {layer name: bool array, True = kept} pruning the lowest-scored units.

    Args:
      scores: {layer name: scores}, e.g. from `score_units`.
      fraction: share of units to prune (rounded to a count), or
      count: number of units to prune (global), exactly one of the two.
      per_layer: prune `fraction` of every layer (as `filter_l1` does) instead
        of the lowest units of one global ranking.
      seed: tie-breaking order, see `unit_ranking`.
    """
    _check_scores(scores)
    sizes = [len(np.asarray(v)) for v in scores.values()]
    if per_layer:
        if fraction is None or count is not None:
            raise ValueError("per-layer pruning takes a fraction, not a count")
        _validate_amount(sum(sizes), fraction, None)
        return {name: _lowest_removed(values, int(round(fraction * len(values))), seed)
                for name, values in scores.items()}
    removed = _validate_amount(sum(sizes), fraction, count)
    keep = np.ones(sum(sizes), bool)
    keep[unit_ranking(scores, seed)[len(keep) - removed:]] = False
    bounds = np.cumsum([0] + sizes)
    return {name: keep[bounds[i]:bounds[i + 1]] for i, name in enumerate(scores)}


def _lowest_removed(values, removed, seed):
    ranking = unit_ranking({"layer": values}, seed)
    keep = np.ones(len(ranking), bool)
    keep[ranking[len(ranking) - removed:]] = False
    return keep


def first_k_overlap(ranking_a, ranking_b, k):
    """Share of the k most important units that two rankings have in common."""
    ranking_a, ranking_b = _check_rankings(ranking_a, ranking_b, k)
    return len(np.intersect1d(ranking_a[:k], ranking_b[:k])) / k


def last_k_overlap(ranking_a, ranking_b, k):
    """Share of the k least important units (pruned first) two rankings share."""
    ranking_a, ranking_b = _check_rankings(ranking_a, ranking_b, k)
    return len(np.intersect1d(ranking_a[-k:], ranking_b[-k:])) / k


def _check_rankings(ranking_a, ranking_b, k):
    ranking_a = np.asarray(ranking_a)
    ranking_b = np.asarray(ranking_b)
    if ranking_a.shape != ranking_b.shape or ranking_a.ndim != 1:
        raise ValueError(
            f"rankings must be 1-D and of equal length, got {ranking_a.shape} and "
            f"{ranking_b.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
            or not 0 < k <= len(ranking_a):
        raise ValueError(f"k must be an integer in [1, {len(ranking_a)}], got {k!r}")
    return ranking_a, ranking_b


def full_mask(model):
    """A mask keeping every unit."""
    return {layer.name: np.ones(num_units(layer), bool) for layer in prunable_layers(model)}


def _mask_targets(model, mask):
    """(variable, keep vector) pairs whose zeroing silences the pruned units."""
    if not isinstance(mask, dict) or not mask:
        raise ValueError("mask must be a non-empty dict {layer name: bool array}")
    layers = {layer.name: layer for layer in prunable_layers(model)}
    targets = []
    for name, keep in mask.items():
        if name not in layers:
            raise ValueError(
                f"mask names layer {name!r}, which is not a prunable layer; prunable: "
                f"{', '.join(layers)}")
        keep = np.asarray(keep)
        layer = layers[name]
        if keep.dtype != bool or keep.shape != (num_units(layer),):
            raise ValueError(
                f"mask of layer {name!r} must be a bool array of shape "
                f"({num_units(layer)},), got {keep.dtype} {keep.shape}")
        variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
        batch_norm = _following_batch_norm(model, layer)
        if batch_norm is not None:
            # BN(0) = beta - gamma * mean / std: zero gamma and beta too.
            if not (batch_norm.scale and batch_norm.center):
                raise ValueError(
                    f"cannot silence units of {name!r}: the BatchNormalization after it "
                    "needs scale=True and center=True")
            variables += [batch_norm.gamma, batch_norm.beta]
        targets += [(variable, keep) for variable in variables]
    return targets


def apply_unit_mask(model, mask):
    """Zeroes the incoming weights and bias of every pruned unit (in place).

    A pruned unit of a ReLU (or linear) layer then outputs exactly zero; a
    BatchNormalization right after the layer gets the unit's gamma and beta
    zeroed as well. Returns `model`.
    """
    for variable, keep in _mask_targets(model, mask):
        variable.assign(variable.numpy() * keep.astype(variable.dtype.as_numpy_dtype))
    return model


class UnitMaskCallback(tf_keras.callbacks.Callback):
    """Keeps pruned units at zero while training: re-applies the mask after each batch."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask
        self._targets = None

    def _apply(self):
        if self._targets is None:
            self._targets = [(variable, tf.constant(keep, variable.dtype))
                             for variable, keep in _mask_targets(self.model, self.mask)]
        for variable, keep in self._targets:
            variable.assign(variable * keep)

    def on_train_begin(self, logs=None):
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        self._apply()


def mask_summary(mask):
    """Pruned share of units per layer and overall: {layer name | 'overall': float}."""
    summary = {name: float(1.0 - np.mean(keep)) for name, keep in mask.items()}
    total = sum(len(keep) for keep in mask.values())
    summary["overall"] = float(sum((~np.asarray(k)).sum() for k in mask.values()) / total)
    return summary


def prune_units(model, criterion, fraction, x=None, y=None, *, seed=0, batch_size=512):
    """Scores, selects and zeroes the lowest `fraction` of units; returns the mask.

    `filter_l1` prunes `fraction` of every layer; the other criteria prune the
    lowest `fraction` of one global ranking over all hidden units.
    """
    spec = get_criterion(criterion)
    scores = score_units(model, criterion, x, y, batch_size=batch_size)
    mask = select_pruned_units(scores, fraction=fraction, per_layer=spec.per_layer, seed=seed)
    apply_unit_mask(model, mask)
    return mask


# ------------------------------------------------------- weight sensitivity (SiPP)

# A unit's same-sign total at or below this (float32 machine epsilon) counts as 0:
# its weights get sensitivity 0 on that sample, as in torchprune.
SIPP_TOTAL_EPSILON = float(np.finfo(np.float32).eps)
# Per-sample sensitivities held at once (float64: 128 MB), whatever the layer's width.
SIPP_CHUNK_ELEMENTS = 1 << 24


def _check_weight_layers(model, layer_names, x):
    """The named Dense / Conv2D layers and the samples as the model's dtype."""
    _check_model(model)
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty batch of samples, got shape {x.shape}")
    layers = [model.get_layer(name) for name in layer_names]
    for layer in layers:
        if not _is_unit_layer(layer):
            raise ValueError(f"weight sensitivity scores Dense and Conv2D kernels; "
                             f"{layer.name!r} is {type(layer).__name__}")
        if isinstance(layer, tf_keras.layers.Conv2D) and (
                layer.groups != 1 or layer.data_format != "channels_last"):
            raise ValueError(f"{layer.name!r}: only ungrouped channels_last convolutions")
    return layers, x.astype(model.inputs[0].dtype.as_numpy_dtype)


def _kernel_inputs(model, layers, x, batch_size):
    """Yields, per batch of samples, every layer's kernel inputs as float64 tensors of
    shape (samples, positions, kernel rows): the values each kernel weight multiplies
    at each output position (a convolution's patches, zero padding included; one
    position for a Dense layer on a vector)."""
    feeds = tf_keras.Model(model.inputs, [layer.input for layer in layers])
    for start in range(0, len(x), batch_size):
        batch = tf.constant(x[start:start + batch_size])
        inputs = feeds(batch, training=False)
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        rows = []
        for layer, value in zip(layers, inputs):
            if isinstance(layer, tf_keras.layers.Conv2D):
                kh, kw = layer.kernel_size
                value = tf.image.extract_patches(
                    value, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                    rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
            rows.append(tf.cast(tf.reshape(value, [int(batch.shape[0]), -1, value.shape[-1]]),
                                tf.float64))
        yield rows


def sipp_sensitivity(model, layer_names, x, batch_size=32):
    """SiPP as torchprune's deterministic `SiPPNet` computes it (Lost in Pruning's SiPP).

    For kernel weight w_ij (input row j, output unit i) and one sample whose kernel
    input p is non-negative, the sensitivity is

        g_ij(p) = |w_ij| p_j / sum_k |w_ik| p_k   over the k with w_ik of the sign of w_ij

    (0 for w_ij = 0 and when that same-sign total is 0): the weight's share of its
    unit's input through the weights of its own sign, W+ or W-. A signed kernel input
    a is split into two samples, p = a+ = max(a, 0) and p = a- = max(-a, 0), each
    scored on its own. In a convolution g is averaged over the output positions
    (patches, zero padding included); over the samples (both halves of every
    reference sample) the score is the **maximum**. Returns {layer name: float64
    array of the kernel's shape}; `pruning.global_keep_masks` ranks every layer's
    scores together (one global top-k), and `sipp_removed_weights` gives the budget.
    """
    layers, x = _check_weight_layers(model, layer_names, x)
    kernels = [tf.cast(tf.reshape(layer.kernel, [-1, layer.kernel.shape[-1]]), tf.float64)
               for layer in layers]
    signed = [(tf.nn.relu(k), tf.nn.relu(-k)) for k in kernels]  # |W+|, |W-|
    best = [np.zeros(k.shape, np.float64) for k in kernels]
    for rows in _kernel_inputs(model, layers, x, batch_size):
        for position, value in enumerate(rows):
            positions = float(value.shape[1])
            # per-sample shares are (samples, rows, units): a few at a time for wide layers
            step = max(1, SIPP_CHUNK_ELEMENTS // int(np.prod(best[position].shape)))
            for p in (tf.nn.relu(value), tf.nn.relu(-value)):  # a+ and a- as own samples
                if not bool(tf.reduce_any(p > 0)):
                    continue  # an all-zero half (a- after a ReLU) scores 0 everywhere
                for part in signed[position]:
                    total = tf.einsum("spk,ku->spu", p, part)
                    inverse = tf.where(total > SIPP_TOTAL_EPSILON,
                                       1.0 / tf.maximum(total, SIPP_TOTAL_EPSILON),
                                       tf.zeros_like(total))
                    for first in range(0, int(p.shape[0]), step):
                        # mean over positions of p_j / total_i, per sample: (s, k, u)
                        share = tf.einsum("spk,spu->sku", p[first:first + step],
                                          inverse[first:first + step]) / positions
                        score = tf.reduce_max(part[None] * share, axis=0).numpy()
                        best[position] = np.maximum(best[position], score)
    return {layer.name: score.reshape(layer.kernel.shape)
            for layer, score in zip(layers, best)}


def sipp_removed_weights(model, layer_names, sparsity):
    """How many kernel weights SiPP removes for the prune ratio `sparsity`.

    As in torchprune, the ratio counts every parameter of the pruned layers, biases
    included, while only kernel weights are removed: round(sparsity x (kernel +
    bias parameters)), at most every kernel weight but one.
    """
    layers = [model.get_layer(name) for name in layer_names]
    kernels = sum(int(layer.kernel.shape.num_elements()) for layer in layers)
    biases = sum(int(layer.bias.shape.num_elements()) for layer in layers if layer.use_bias)
    return min(int(round(sparsity * (kernels + biases))), kernels - 1)


def weight_sensitivity(model, layer_names, x, batch_size=32):
    """`sipp_mean`: each weight's relative contribution to its unit, averaged over samples.

    Not torchprune's SiPP (`sipp_sensitivity` is): this toolkit's earlier score,
    kept under its own name. For kernel weight w_ij and a reference sample x the
    contribution is c_ij(x) = w_ij a_j(x), a_j(x) the (signed) value the weight
    multiplies (a Dense layer's input feature j; a convolution's input under kernel
    offset and channel j at one output position, zero padding included).
    Contributions are split by the sign of c (not of w and a separately):

        s_ij(x) = |c_ij(x)| / sum_k |c_ik(x)| over the k with c_ik(x) of the sign of c_ij(x)

    (0 when c_ij(x) = 0). The score is the **mean** of s_ij over the samples `x`
    and, in a convolution, over output positions. Returns {layer name: float64
    array of the kernel's shape}, ranked globally by `pruning.global_keep_masks`.

    With p+ / p- and w+ / w- the positive and (absolute) negative parts of inputs
    and weights, a unit's positive total is p+ . w+ + p- . w- and its negative
    total p+ . w- + p- . w+, so every mean is a few matrix products per batch.
    """
    layers, x = _check_weight_layers(model, layer_names, x)
    kernels = [tf.reshape(layer.kernel, [-1, layer.kernel.shape[-1]]) for layer in layers]
    # Per layer: sums over rows (samples x positions) of p+ / S+, p- / S-, p+ / S-, p- / S+.
    sums = [None] * len(layers)
    rows = [0] * len(layers)
    for batch_rows in _kernel_inputs(model, layers, x, batch_size):
        for position, value in enumerate(batch_rows):
            value = tf.reshape(value, [-1, value.shape[-1]])
            kernel = tf.cast(kernels[position], tf.float64)
            p_pos, p_neg = tf.nn.relu(value), tf.nn.relu(-value)
            w_pos, w_neg = tf.nn.relu(kernel), tf.nn.relu(-kernel)
            inv = [tf.math.divide_no_nan(tf.constant(1.0, tf.float64), total) for total in (
                p_pos @ w_pos + p_neg @ w_neg,  # positive total of each unit
                p_pos @ w_neg + p_neg @ w_pos)]  # negative total
            parts = [tf.matmul(p, i, transpose_a=True).numpy() for p, i in (
                (p_pos, inv[0]), (p_neg, inv[1]), (p_pos, inv[1]), (p_neg, inv[0]))]
            sums[position] = parts if sums[position] is None else [
                a + b for a, b in zip(sums[position], parts)]
            rows[position] += int(value.shape[0])
    scores = {}
    for layer, kernel, (pos_pos, neg_neg, pos_neg, neg_pos), count in zip(
            layers, kernels, sums, rows):
        w = kernel.numpy().astype(np.float64)
        # w > 0: positive inputs give positive contributions, negative ones negative;
        # w < 0 the other way round.
        relative = np.where(w > 0, pos_pos + neg_neg, pos_neg + neg_pos) / count
        scores[layer.name] = (np.abs(w) * relative).reshape(layer.kernel.shape)
    return scores


# Data-informed global weight scores: {method name: score function(model, layer
# names, x)}. `sipp` is torchprune's SiPPNet; `sipp_mean` the earlier mean-based score.
WEIGHT_SENSITIVITIES = {"sipp": sipp_sensitivity, "sipp_mean": weight_sensitivity}
