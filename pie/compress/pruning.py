"""Magnitude pruning with tfmot: schedules, which layers, and measured sparsity."""
import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pie.io import errors
from pie.models import builders

SCHEDULES = ("polynomial", "constant")
# tfmot rounds the number of pruned weights per layer; the study's tolerance.
SPARSITY_TOLERANCE = 0.005


PruningError = errors.PruningError


def validate_sparsity(value):
    if not 0.0 <= value < 1.0:
        raise PruningError(f"sparsity must be in [0, 1), got {value:g}")


def auto_schedule_steps(total_steps):
    """Default (begin, end, frequency): ramp over 10%-60% of training, 10 updates.

    end - begin is a multiple of the frequency so the last mask update lands on
    end_step, where the schedule reaches its final sparsity; the last 40% of
    training fine-tunes the pruned network.
    """
    if total_steps < 10:
        raise PruningError(f"pruning needs at least 10 training steps, got {total_steps}")
    begin = total_steps // 10
    frequency = max(1, (total_steps * 6 // 10 - begin) // 10)
    end = begin + 10 * frequency
    return begin, end, frequency


def make_schedule(kind, target, *, begin_step, end_step, frequency, power=3,
                  initial_sparsity=0.0, total_steps=None):
    """A tfmot PruningSchedule; checks it can reach `target` within training."""
    validate_sparsity(target)
    if kind not in SCHEDULES:
        raise PruningError(f"unknown schedule '{kind}'; allowed: {', '.join(SCHEDULES)}")
    if frequency < 1:
        raise PruningError(f"pruning frequency must be at least 1, got {frequency}")
    if begin_step < 0:
        raise PruningError(f"begin_step must be non-negative, got {begin_step}")
    if kind == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            target, begin_step=begin_step, end_step=-1, frequency=frequency)
    if end_step <= begin_step:
        raise PruningError(f"end_step ({end_step}) must be after begin_step ({begin_step})")
    if (end_step - begin_step) % frequency:
        raise PruningError(
            f"end_step - begin_step ({end_step - begin_step}) must be a multiple of the "
            f"frequency ({frequency}), or the final sparsity is never applied")
    if total_steps is not None and end_step >= total_steps:
        raise PruningError(
            f"end_step ({end_step}) must be before the last training step ({total_steps})")
    if not 0.0 <= initial_sparsity <= target:
        raise PruningError(
            f"initial_sparsity must be in [0, target={target:g}], got {initial_sparsity:g}")
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity, final_sparsity=target, begin_step=begin_step,
        end_step=end_step, power=power, frequency=frequency)


def prunable_layer_names(model, include_classifier=False):
    """Conv and Dense layers whose kernels magnitude pruning removes weights from."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue  # tfmot does not prune depthwise kernels
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            if layer.name == builders.CLASSIFIER and not include_classifier:
                continue
            names.append(layer.name)
    return names


def wrap_for_pruning(model, schedule, include_classifier=False):
    """A copy of `model` whose prunable layers carry tfmot pruning wrappers."""
    names = set(prunable_layer_names(model, include_classifier))

    def clone(layer):
        if layer.name in names:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # shared, so the copy starts from the same weights

    return keras.models.clone_model(model, clone_function=clone)


def strip(model):
    """The plain model with the zeros of the pruned kernels kept."""
    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_sparsity(model, layer_names):
    """Fraction of exact zeros per named layer's kernel, and over all of them."""
    per_layer, zeros, total = {}, 0, 0
    for name in layer_names:
        kernel = model.get_layer(name).kernel.numpy()
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
