"""Weight pruning: tfmot per-layer magnitude pruning (schedules, which layers,
measured sparsity) and global weight pruning (WT during training, masks of
globally ranked weight scores for SiPP)."""
import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from pie.compress import tfmot_loader

from pie.compress.sparsity import validate_sparsity  # noqa: F401  (pruning.validate_sparsity)
from pie.io import errors
from pie.models import builders

tfmot = tfmot_loader.load()

SCHEDULES = ("polynomial", "constant")
# tfmot rounds the number of pruned weights per layer; the study's tolerance.
SPARSITY_TOLERANCE = 0.005


PruningError = errors.PruningError


# Mask updates of the default schedule (fewer when training has fewer steps).
AUTO_UPDATES = 10
_short_runs_logged = set()


def auto_schedule_steps(total_steps, log=True):
    """Default (begin, end, frequency): ramp over 10%-60% of training, 10 updates.

    end - begin is a multiple of the frequency so the last mask update lands on
    end_step, where the schedule reaches its final sparsity; the last 40% of
    training fine-tunes the pruned network. A run too short for 10 updates (tiny
    data: 2 epochs of 5 batches) ramps in one update per step, still ending before
    the last step (logged once per length, unless `log` is False).
    """
    if total_steps < 2:
        raise PruningError(
            f"pruning during training needs at least 2 training steps, this run has "
            f"{total_steps} (--epochs x steps per epoch): raise --epochs or --steps_per_epoch, "
            "or lower --batch_size")
    begin = total_steps // 10
    ramp_end = max(begin + 1, total_steps * 6 // 10)
    updates = min(AUTO_UPDATES, ramp_end - begin)
    frequency = max(1, (ramp_end - begin) // updates)
    end = begin + updates * frequency
    if log and updates < AUTO_UPDATES and total_steps not in _short_runs_logged:
        _short_runs_logged.add(total_steps)
        print(f"pruning schedule: {total_steps} training steps are too few for "
              f"{AUTO_UPDATES} mask updates: begin_step {begin}, end_step {end}, frequency "
              f"{frequency} ({updates} updates)", flush=True)
    return begin, end, frequency


class _TargetVariable:
    """Keeps a schedule's target sparsity in a float32 variable, so the graph traced
    for one member serves members of every target (pie.compress.population).

    tfmot's schedules read their target as a Python float, baked into the traced
    graph as a constant. The variable is not a layer weight: it is neither saved
    in checkpoints nor in model files, and is set again for every member.
    """

    def _hold(self, attribute):
        import tensorflow as tf
        self._target_attribute = attribute
        self._target = float(getattr(self, attribute))  # as given (the variable: float32)
        setattr(self, attribute, tf.Variable(self._target, trainable=False,
                                             dtype=tf.float32, name="target_sparsity"))

    @property
    def target(self):
        return self._target

    def retarget(self, target):
        validate_sparsity(target)
        self._target = float(target)
        getattr(self, self._target_attribute).assign(self._target)

    def get_config(self):
        config = super().get_config()
        config["config"][self._target_attribute] = self.target
        config["class_name"] = self.stock_name  # tfmot reads it back as its own
        return config


class RetargetablePolynomialDecay(_TargetVariable, tfmot.sparsity.keras.PolynomialDecay):
    """tfmot's PolynomialDecay with `final_sparsity` in a variable (same formula: with
    the default initial sparsity 0 the same float32 values step by step)."""
    stock_name = "PolynomialDecay"

    def __init__(self, **config):
        super().__init__(**config)
        self._hold("final_sparsity")


class RetargetableConstantSparsity(_TargetVariable, tfmot.sparsity.keras.ConstantSparsity):
    """tfmot's ConstantSparsity with `target_sparsity` in a variable."""
    stock_name = "ConstantSparsity"

    def __init__(self, **config):
        super().__init__(**config)
        self._hold("target_sparsity")

    def __call__(self, step):
        import tensorflow as tf
        return (self._should_prune_in_step(step, self.begin_step, self.end_step,
                                           self.frequency),
                tf.identity(self.target_sparsity))


def retarget(model, target):
    """Sets the target of every retargetable schedule of `model`'s pruning wrappers."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper
    schedules = {id(layer.pruning_schedule): layer.pruning_schedule
                 for layer in model.submodules
                 if isinstance(layer, pruning_wrapper.PruneLowMagnitude)}
    for schedule in schedules.values():
        if not isinstance(schedule, _TargetVariable):
            raise PruningError("the model's pruning schedule has a fixed target")
        schedule.retarget(target)


def make_schedule(kind, target, *, begin_step, end_step, frequency, power=3,
                  initial_sparsity=0.0, total_steps=None, retargetable=False):
    """A tfmot PruningSchedule; checks it can reach `target` within training.
    `retargetable`: its target is a variable (`retarget`), not a graph constant."""
    validate_sparsity(target)
    if kind not in SCHEDULES:
        raise PruningError(f"unknown schedule '{kind}'; allowed: {', '.join(SCHEDULES)}")
    if frequency < 1:
        raise PruningError(f"pruning frequency must be at least 1, got {frequency}")
    if begin_step < 0:
        raise PruningError(f"begin_step must be non-negative, got {begin_step}")
    if kind == "constant":
        constant = (RetargetableConstantSparsity if retargetable
                    else tfmot.sparsity.keras.ConstantSparsity)
        return constant(target_sparsity=target, begin_step=begin_step, end_step=-1,
                        frequency=frequency)
    if end_step <= begin_step:
        raise PruningError(f"end_step ({end_step}) must be after begin_step ({begin_step})")
    if (end_step - begin_step) % frequency:
        raise PruningError(
            f"end_step - begin_step ({end_step - begin_step}) must be a multiple of the "
            f"frequency ({frequency}), or the final sparsity is never applied")
    if total_steps is not None and end_step >= total_steps:
        raise PruningError(
            f"end_step ({end_step}) must be before the last training step ({total_steps}: "
            f"--epochs x steps per epoch): set --end_step below {total_steps} (and "
            f"--begin_step below it), or leave both at -1 to derive them from the run")
    if not 0.0 <= initial_sparsity <= target:
        raise PruningError(
            f"initial_sparsity must be in [0, target={target:g}], got {initial_sparsity:g}")
    polynomial = (RetargetablePolynomialDecay if retargetable
                  else tfmot.sparsity.keras.PolynomialDecay)
    return polynomial(initial_sparsity=initial_sparsity, final_sparsity=target,
                      begin_step=begin_step, end_step=end_step, power=power,
                      frequency=frequency)


# Joins the names of a nested layer's enclosing models and its own: "backbone/conv1".
PATH_SEPARATOR = "/"


def _sublayers(model):
    """(path, layer) of every layer of `model`, the layers of nested models (a
    backbone inside a wrapper, blocks inside it) after their model, depth first."""
    for layer in getattr(model, "layers", ()):
        yield layer.name, layer
        if isinstance(layer, keras.Model):
            for path, inner in _sublayers(layer):
                yield layer.name + PATH_SEPARATOR + path, inner


def prunable_layer_names(model, include_classifier=False):
    """Conv and Dense layers whose kernels magnitude pruning removes weights from,
    found in nested models too: a top-level layer by its name, a nested one by its
    path ("backbone/conv1", see layer_at). Each layer is listed once (a layer shared
    by two models is pruned once)."""
    names, seen = [], set()
    for path, layer in _sublayers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue  # tfmot does not prune depthwise kernels
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and id(layer) not in seen:
            if layer.name == builders.CLASSIFIER and not include_classifier:
                continue
            seen.add(id(layer))
            names.append(path)
    return names


def layer_at(model, path):
    """The layer a prunable_layer_names path names: a layer of `model`, or of the
    models nested in it."""
    layer = model
    for name in path.split(PATH_SEPARATOR):
        layer = layer.get_layer(name)
    return layer


def kernel_of(model, path):
    """The kernel variable of the layer at `path` (layer_at)."""
    return layer_at(model, path).kernel


def removed_line(member_id, method, removed, images, what="weights"):
    """The log line of a member pruned once: what was removed and, for a method that
    scores on data (the registry's `needs_data`), on how many reference images."""
    from pie.compress import methods  # the registry imports this module's users
    scored = (f" (scored on {images} reference images)" if methods.get(method).needs_data
              else "")
    return f"{member_id}: {method} removed {removed:.4f} of the {what}{scored}"


def wrap_for_pruning(model, schedule, include_classifier=False):
    """A copy of `model` whose prunable layers carry tfmot pruning wrappers."""
    names = set(prunable_layer_names(model, include_classifier))

    def clone(layer):
        if layer.name in names:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # shared, so the copy starts from the same weights

    return keras.models.clone_model(model, clone_function=clone)


def is_wrapped(model):
    """Whether any layer of `model` carries a tfmot pruning wrapper."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper
    return any(isinstance(layer, pruning_wrapper.PruneLowMagnitude)
               for layer in model.submodules)


def strip(model):
    """The plain model with the zeros of the pruned kernels kept."""
    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_sparsity(model, layer_names):
    """Fraction of exact zeros per named layer's kernel, and over all of them."""
    per_layer, zeros, total = {}, 0, 0
    for name in layer_names:
        kernel = kernel_of(model, name).numpy()
        layer_zeros = int(np.count_nonzero(kernel == 0))
        per_layer[name] = layer_zeros / kernel.size
        zeros += layer_zeros
        total += kernel.size
    overall = zeros / total if total else 0.0
    return per_layer, overall


def check_sparsity(per_layer, target, tolerance=SPARSITY_TOLERANCE):
    """Fails loudly when a pruned layer missed its target by more than `tolerance`."""
    missed = {name: value for name, value in per_layer.items()
              if abs(value - target) > tolerance}
    if missed:
        detail = ", ".join(f"{name}={value:.4f}" for name, value in sorted(missed.items()))
        raise PruningError(
            f"measured sparsity misses the target {target:g} by more than "
            f"{tolerance * 100:g} points: {detail}")


# ------------------------------------------------- global weight pruning (WT, SiPP)
#
# tfmot prunes every layer to the same sparsity. Lost in Pruning's WT instead
# ranks the weights of all prunable layers together: one magnitude threshold,
# so layers with many small weights lose more than layers with few large ones.
# SiPP ranks them the same way by a data-informed score (criteria.weight_sensitivity).


def global_keep_masks(scores, sparsity):
    """{layer: bool array, True = kept} removing the lowest `sparsity` share of all scores.

    One ranking over every layer's scores (a global budget): exactly
    round(sparsity x total) weights are removed; equal scores go lower layer and
    lower flat index first, so the count is exact even when many weights are 0.
    """
    validate_sparsity(sparsity)
    if not scores:
        raise PruningError("global pruning needs at least one layer's scores")
    names = list(scores)
    flat = [np.abs(np.asarray(scores[name], np.float64)).ravel() for name in names]
    values = np.concatenate(flat)
    if not np.isfinite(values).all():
        raise PruningError("weight scores contain NaN or infinity")
    removed = int(round(sparsity * values.size))
    keep = np.ones(values.size, bool)
    keep[np.argsort(values, kind="stable")[:removed]] = False
    bounds = np.cumsum([0] + [len(f) for f in flat])
    return {name: keep[bounds[i]:bounds[i + 1]].reshape(np.shape(scores[name]))
            for i, name in enumerate(names)}


def global_magnitude_masks(model, sparsity, layer_names):
    """WT: one |w| threshold over the kernels of `layer_names` giving `sparsity` overall."""
    return global_keep_masks({name: kernel_of(model, name).numpy()
                              for name in layer_names}, sparsity)


def apply_weight_masks(model, masks):
    """Zeroes the removed kernel weights (in place)."""
    for name, keep in masks.items():
        kernel = kernel_of(model, name)
        kernel.assign(kernel.numpy() * keep.astype(kernel.dtype.as_numpy_dtype))
    return model


def masks_from_zeros(model, layer_names):
    """The masks a pruned model carries: its kernels' exact zeros (how a resumed run
    recovers them from a checkpoint; a trained weight is never exactly 0 by chance)."""
    return {name: kernel_of(model, name).numpy() != 0 for name in layer_names}


class WeightMaskCallback(keras.callbacks.Callback):
    """Keeps removed weights at zero while training: re-applies the masks after each batch.

    Masking after the optimizer step (not in the forward pass as tfmot does) gives
    the same forward computation: every batch sees the removed weights at 0.
    """

    def __init__(self, masks=None):
        super().__init__()
        self.masks = masks
        self._targets = None

    def set_masks(self, masks):
        self.masks = masks
        self._targets = None
        self._apply()

    def _apply(self):
        if not self.masks:
            return
        if self._targets is None:
            import tensorflow as tf
            self._targets = []
            for name, keep in self.masks.items():
                kernel = kernel_of(self.model, name)
                self._targets.append((kernel, tf.constant(keep, kernel.dtype)))
        for kernel, keep in self._targets:
            kernel.assign(kernel * keep)

    def on_train_begin(self, logs=None):
        self._apply()

    def on_train_batch_end(self, batch, logs=None):
        self._apply()


class GlobalMagnitudePruning(WeightMaskCallback):
    """WT during training: at each step where the tfmot `schedule` updates, one global
    |w| threshold over `layer_names` sets the masks to the schedule's sparsity.

    The step is the optimizer's iteration count, so a run resumed from a checkpoint
    continues the schedule; its masks come back from the kernels' zeros.
    """

    def __init__(self, schedule, layer_names):
        super().__init__()
        self.schedule = schedule
        self.layer_names = list(layer_names)

    def on_train_begin(self, logs=None):
        if self.masks is None:
            self.masks = masks_from_zeros(self.model, self.layer_names)
        super().on_train_begin(logs)

    def on_train_batch_begin(self, batch, logs=None):
        import tensorflow as tf
        step = tf.cast(self.model.optimizer.iterations, tf.int64)
        update, sparsity = self.schedule(step)
        if bool(update):
            self.set_masks(global_magnitude_masks(self.model, float(sparsity),
                                                  self.layer_names))


def check_overall_sparsity(overall, target, tolerance=SPARSITY_TOLERANCE):
    """Global methods: the overall measured sparsity (not each layer's) meets the target."""
    if abs(overall - target) > tolerance:
        raise PruningError(
            f"measured overall sparsity {overall:.4f} misses the target {target:g} by more "
            f"than {tolerance * 100:g} points")
