"""Accelerator speed: Keras mixed precision (`--precision`) and XLA (`--jit_compile`).

`mixed_float16` and `mixed_bfloat16` set tf_keras's global dtype policy before
any model is built: layers compute in 16 bits and keep float32 variables, the
classifier (pie.models.builders) computes and outputs float32 logits, and with
float16 the optimizer scales the loss (a dynamic LossScaleOptimizer,
pie.compress.schedules.build_optimizer) so small gradients do not underflow.
tfmot's pruning wrappers keep their float32 masks: a pruned member keeps its
zeros. A member made from a finished one starts from it copied into the policy
(`in_policy`). A member is saved as a float32 model (`float32_model`), so every later
stage loads and predicts it in float32 whatever it was trained in.

`--jit_compile` compiles Keras's train step with XLA (`model.compile(jit_compile=True)`).
"""
import contextlib

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
FLOAT32 = "float32"


def validate(name):
    if name not in PRECISIONS:
        raise errors.UsageError(f"unknown --precision '{name}'; allowed: "
                                f"{', '.join(PRECISIONS)}")
    return name


def set_policy(name):
    """Sets the global Keras dtype policy; models built afterwards use it."""
    import tf_keras as keras
    keras.mixed_precision.set_global_policy(validate(name))


@contextlib.contextmanager
def policy(name):
    """The global Keras dtype policy set to `name` inside the block, then restored."""
    import tf_keras as keras
    previous = keras.mixed_precision.global_policy()
    set_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def current():
    """The name of the global Keras dtype policy."""
    import tf_keras as keras
    return keras.mixed_precision.global_policy().name


def needs_loss_scale(name):
    """float16's narrow exponent range needs loss scaling; bfloat16's does not."""
    return validate(name) == "mixed_float16"


def compile_options(jit_compile):
    """Extra `model.compile` arguments: nothing by default (Keras's own choice)."""
    return {"jit_compile": True} if jit_compile else {}


def _float32_config(config):
    """A model config with every layer's dtype policy set to float32."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "dtype" and _is_policy(value):
                out[key] = FLOAT32
            else:
                out[key] = _float32_config(value)
        return out
    if isinstance(config, list):
        return [_float32_config(item) for item in config]
    return config


def _is_policy(value):
    if isinstance(value, str):
        return value.startswith("mixed_")
    return isinstance(value, dict) and value.get("class_name") in ("Policy", "DTypePolicy")


def is_float32(model):
    """Whether every layer of `model` computes in float32."""
    return all(layer.dtype_policy.name == FLOAT32 for layer in _layers(model))


def _layers(model):
    import tf_keras as keras
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def float32_model(model):
    """`model` itself when it computes in float32, else a float32 copy with the same
    weights (mixed-precision variables are float32 already: copied as they are)."""
    import tf_keras as keras
    if is_float32(model):
        return model
    config = _float32_config(model.get_config())
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(FLOAT32)  # layers without a dtype in config
    try:
        copy = cls.from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights(model.get_weights())
    return copy


def in_policy(model):
    """`model` (a saved member: float32) as the global policy computes it: `model`
    itself under float32, else a copy with the same weights whose layers take the
    global policy, its input and output layers kept as they are (the logits stay
    float32, as pie.models.builders builds them). A member made from a finished one
    (pie.compress.from_parent) trains in --precision like any other, and tfmot's
    wrappers meet layers of their own policy: a float32 layer wrapped under a mixed
    policy reads its kernel in float32 and its mask in 16 bits, and fails."""
    import tf_keras as keras
    name = current()
    if name == FLOAT32 or not is_float32(model):
        return model
    config = _policy_config(model.get_config(), name)
    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    copy = cls.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _policy_config(config, name):
    """A model config whose layers but its input and output layers take the policy
    `name` (nested models: the same, inside)."""
    layers = config["layers"]
    if "output_layers" in config:  # functional
        kept = {entry[0] for entry in config["output_layers"]}
    else:  # Sequential: its last layer makes the output
        kept = {layers[-1]["config"]["name"]} if layers else set()
    out = dict(config, layers=[])
    for layer in layers:
        inner = layer["config"]
        if layer["class_name"] != "InputLayer" and inner["name"] not in kept:
            inner = (_policy_config(inner, name) if "layers" in inner
                     else dict(inner, dtype=name))
        out["layers"].append(dict(layer, config=inner))
    return out
