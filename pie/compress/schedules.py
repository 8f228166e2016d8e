"""Training recipes: learning-rate schedules, weight decay, and the optimizer they make.

A schedule is a Keras `LearningRateSchedule` evaluated at every optimizer step
(the step the update is made at: 0 for the first). It is a base rate, times a
linear warm-up factor, times a decay:

    base      = learning_rate, or learning_rate x batch_size / 256 with lr_per_256
    warm-up   = min(1, (step + 1) / warmup_steps)      (1 without warm-up)
    constant  : 1
    step      : decay_factor ** (number of boundaries b with step >= b),
                boundaries = decay epochs x steps_per_epoch
    cosine    : 0.5 (1 + cos(pi p)),  p = clip((step - warmup_steps) /
                                                (total_steps - warmup_steps), 0, 1)
    polynomial: (1 - p) ** POLYNOMIAL_POWER

so the last warm-up step runs at the base rate, and the decay epochs count whole
epochs done ("x0.1 at epoch 30": the 31st epoch onwards). The pruning schedule is
separate and counts steps (--begin_step, --end_step, --frequency).

Weight decay acts on kernels only (every Conv2D, DepthwiseConv2D and Dense
kernel), never on batch-norm gamma/beta or biases:
- `l2`: the gradient of the loss term (weight_decay / 2) x sum of squared kernel
  weights, wd x w, is added to each kernel's gradient before the optimizer's
  update, so it passes through momentum (or Adam's moments) as the study's loss
  term did. It is applied inside the optimizer, after gradients are summed over
  replicas and unscaled from float16 loss scaling; the logged loss is the data
  loss alone.
- `decoupled`: the optimizer's own weight decay, w <- w - lr x wd x w at every
  step, outside the gradient (SGDW / AdamW).

With the defaults (constant schedule, no warm-up, no weight decay, no
lr_per_256) `build_optimizer` returns exactly the optimizer the trainer built
before these options existed, so trained weights are unchanged.
"""
import dataclasses
import functools
import math
import re

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors

SCHEDULES = ("constant", "step", "cosine", "polynomial")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
OPTIMIZERS = ("adam", "sgd", "momentum")
POLYNOMIAL_POWER = 2.0
LR_REFERENCE_BATCH = 256
SGD_MOMENTUM = 0.9
# Variables weight decay applies to: kernels (`conv1/kernel:0`, `dw/depthwise_kernel:0`).
KERNEL_NAME = re.compile(r"kernel(:\d+)?$")
# The optimizer's exclusion list takes patterns of names to leave out: all but kernels.
NOT_KERNEL = r"^(?!.*kernel(:\d+)?$)"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The learning-rate schedule and weight decay of a training run (validated)."""
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: tuple = ()
    decay_factor: float = 0.1
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"
    lr_per_256: bool = False

    @property
    def plain(self):
        """The recipe of a constant learning rate as given: a float, no schedule."""
        return (self.schedule == "constant" and self.warmup_epochs == 0
                and not self.lr_per_256)

    def settings(self):
        """The recipe as meta.json records it."""
        return {"lr_schedule": self.schedule, "warmup_epochs": self.warmup_epochs,
                "lr_decay_epochs": list(self.decay_epochs),
                "lr_decay_factor": self.decay_factor, "weight_decay": self.weight_decay,
                "weight_decay_mode": self.weight_decay_mode, "lr_per_256": self.lr_per_256}


def parse_decay_epochs(text):
    """`--lr_decay_epochs`: comma-separated, strictly increasing, positive epochs."""
    text = (text or "").strip()
    if not text:
        return ()
    problem = (f"--lr_decay_epochs must be strictly increasing positive numbers of epochs, "
               f"comma-separated, got '{text}'")
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise errors.UsageError(problem)
    if any(not math.isfinite(v) or v <= 0 for v in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise errors.UsageError(problem)
    return values


def validate(schedule="constant", warmup_epochs=0.0, decay_epochs="", decay_factor=0.1,
             weight_decay=0.0, weight_decay_mode="l2", lr_per_256=False):
    """The Recipe of the flags, or errors.UsageError naming the bad flag and what is
    allowed (one line)."""
    if schedule not in SCHEDULES:
        raise errors.UsageError(f"unknown --lr_schedule '{schedule}'; allowed: "
                                f"{', '.join(SCHEDULES)}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise errors.UsageError(f"unknown --weight_decay_mode '{weight_decay_mode}'; "
                                f"allowed: {', '.join(WEIGHT_DECAY_MODES)}")
    if not math.isfinite(warmup_epochs) or warmup_epochs < 0:
        raise errors.UsageError(f"--warmup_epochs must be at least 0, got {warmup_epochs:g}")
    epochs = parse_decay_epochs(decay_epochs)
    if schedule == "step" and not epochs:
        raise errors.UsageError("--lr_schedule=step needs --lr_decay_epochs (the epochs "
                                "after which the rate is multiplied by --lr_decay_factor)")
    if schedule != "step" and epochs:
        raise errors.UsageError(f"--lr_decay_epochs applies only to --lr_schedule=step, "
                                f"got --lr_schedule={schedule}")
    if not math.isfinite(decay_factor) or not 0 < decay_factor <= 1:
        raise errors.UsageError(f"--lr_decay_factor must be in (0, 1], got {decay_factor:g}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise errors.UsageError(f"--weight_decay must be at least 0, got {weight_decay:g}")
    return Recipe(schedule, float(warmup_epochs), epochs, float(decay_factor),
                  float(weight_decay), weight_decay_mode, bool(lr_per_256))


def base_rate(learning_rate, batch_size, lr_per_256):
    """The rate the schedule starts from (after warm-up): per 256 images if asked."""
    if lr_per_256:
        return learning_rate * batch_size / LR_REFERENCE_BATCH
    return learning_rate


class _RecipeScheduleMethods:
    """RecipeSchedule's methods; the class itself subclasses tf_keras's
    LearningRateSchedule, so it is made on first use (`_recipe_schedule_class`): a
    stage refusing a flag or printing --help never loads TensorFlow."""

    def __init__(self, base, kind="constant", warmup_steps=0, boundaries=(),
                 decay_factor=0.1, total_steps=1, power=POLYNOMIAL_POWER):
        super().__init__()
        if kind not in SCHEDULES:
            raise errors.UsageError(f"unknown --lr_schedule '{kind}'; allowed: "
                                    f"{', '.join(SCHEDULES)}")
        self.base, self.kind = float(base), kind
        self.warmup_steps, self.boundaries = int(warmup_steps), tuple(int(b) for b in boundaries)
        self.decay_factor, self.total_steps = float(decay_factor), int(total_steps)
        self.power = float(power)

    def __call__(self, step):
        import tensorflow as tf
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.base, tf.float32)
        if self.kind == "step" and self.boundaries:
            passed = tf.reduce_sum(tf.cast(
                step >= tf.constant(self.boundaries, tf.float32), tf.float32))
            rate = rate * tf.pow(tf.constant(self.decay_factor, tf.float32), passed)
        elif self.kind in ("cosine", "polynomial"):
            span = float(max(1, self.total_steps - self.warmup_steps))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            if self.kind == "cosine":
                rate = rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
            else:
                rate = rate * tf.pow(1.0 - progress, self.power)
        if self.warmup_steps > 0:
            rate = rate * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return rate

    def get_config(self):
        return {"base": self.base, "kind": self.kind, "warmup_steps": self.warmup_steps,
                "boundaries": list(self.boundaries), "decay_factor": self.decay_factor,
                "total_steps": self.total_steps, "power": self.power}


@functools.cache
def _recipe_schedule_class():
    import tf_keras as keras

    class RecipeSchedule(_RecipeScheduleMethods, keras.optimizers.schedules.LearningRateSchedule):
        """The learning rate at an optimizer step (see the module's formulas)."""

    RecipeSchedule.__module__, RecipeSchedule.__qualname__ = __name__, "RecipeSchedule"
    return RecipeSchedule


def __getattr__(name):
    """`schedules.RecipeSchedule`: the class, made (and TensorFlow loaded) on first use."""
    if name == "RecipeSchedule":
        return _recipe_schedule_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rate_at(recipe, learning_rate, batch_size, steps_per_epoch, epochs, step):
    """The learning rate of one step, computed in Python (the same formula, float64):
    what tests and documentation compare the schedule with."""
    base = base_rate(learning_rate, batch_size, recipe.lr_per_256)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    total = steps_per_epoch * epochs
    rate = base
    if recipe.schedule == "step":
        rate *= recipe.decay_factor ** sum(step >= round(e * steps_per_epoch)
                                           for e in recipe.decay_epochs)
    elif recipe.schedule in ("cosine", "polynomial"):
        progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
        rate *= (0.5 * (1 + math.cos(math.pi * progress)) if recipe.schedule == "cosine"
                 else (1 - progress) ** POLYNOMIAL_POWER)
    if warmup > 0:
        rate *= min(1.0, (step + 1) / warmup)
    return rate


def schedule_for(recipe, learning_rate, batch_size, steps_per_epoch, epochs):
    """The optimizer's learning rate: the float as given for a plain recipe (the
    optimizer then holds it in a variable, as before schedules existed), else a
    RecipeSchedule over `epochs` x `steps_per_epoch` steps."""
    if recipe.plain:
        return learning_rate
    return _recipe_schedule_class()(
        base_rate(learning_rate, batch_size, recipe.lr_per_256), kind=recipe.schedule,
        warmup_steps=round(recipe.warmup_epochs * steps_per_epoch),
        boundaries=[round(e * steps_per_epoch) for e in recipe.decay_epochs],
        decay_factor=recipe.decay_factor, total_steps=steps_per_epoch * max(1, epochs))


def is_kernel(variable):
    """Whether weight decay applies to the variable: a Conv or Dense kernel."""
    return KERNEL_NAME.search(variable.name) is not None


class _KernelL2:
    """Adds the gradient of (rate / 2) x |kernel|^2 to each kernel's gradient, after
    the gradients are aggregated (and unscaled), before the optimizer's update."""
    l2_rate = 0.0

    def update_step(self, gradient, variable):
        if self.l2_rate and is_kernel(variable):
            import tensorflow as tf
            gradient = gradient + tf.cast(self.l2_rate, gradient.dtype) * tf.cast(
                variable, gradient.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return dict(super().get_config(), l2_rate=self.l2_rate)


def _optimizer_classes():
    import tf_keras as keras

    class KernelL2SGD(_KernelL2, keras.optimizers.SGD):
        """SGD with L2 weight decay on kernels (the gradient of the loss term)."""

    class KernelL2Adam(_KernelL2, keras.optimizers.Adam):
        """Adam with L2 weight decay on kernels (the gradient of the loss term)."""

    return {"sgd": (keras.optimizers.SGD, KernelL2SGD),
            "momentum": (keras.optimizers.SGD, KernelL2SGD),
            "adam": (keras.optimizers.Adam, KernelL2Adam)}


def build_optimizer(name, learning_rate, recipe=Recipe(), *, steps_per_epoch=1, epochs=1,
                    batch_size=LR_REFERENCE_BATCH, loss_scale=False):
    """The optimizer of a recipe: `adam`, `sgd` with Nesterov momentum 0.9, or
    `momentum`: SGD with heavy-ball momentum 0.9 (PyTorch's SGD with momentum).

    `learning_rate` follows the recipe's schedule over `epochs` epochs of
    `steps_per_epoch` steps; weight decay acts on kernels only; `loss_scale` wraps
    it in a dynamic LossScaleOptimizer (float16 mixed precision)."""
    import tf_keras as keras
    if name not in OPTIMIZERS:
        raise errors.UsageError(f"unknown --optimizer '{name}'; allowed: {', '.join(OPTIMIZERS)}")
    if steps_per_epoch < 1:
        raise errors.UsageError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    rate = schedule_for(recipe, learning_rate, batch_size, steps_per_epoch, epochs)
    plain_class, l2_class = _optimizer_classes()[name]
    decay = recipe.weight_decay
    options = ({"momentum": SGD_MOMENTUM, "nesterov": name == "sgd"}
               if name in ("sgd", "momentum") else {})
    if decay and recipe.weight_decay_mode == "l2":
        optimizer = l2_class(rate, **options)
        optimizer.l2_rate = decay
    elif decay:
        optimizer = plain_class(rate, weight_decay=decay, **options)
        optimizer.exclude_from_weight_decay(var_names=[NOT_KERNEL])
    else:
        optimizer = plain_class(rate, **options)
    if loss_scale:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def inner_optimizer(optimizer):
    """The optimizer under a LossScaleOptimizer (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_rate(optimizer, step=None):
    """The learning rate the optimizer used at `step` (default: its last update, one
    before its step count), as a Python float."""
    import tf_keras as keras
    inner = inner_optimizer(optimizer)
    rate = inner._learning_rate  # the schedule, or the variable holding a constant rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        if step is None:
            step = max(0, int(inner.iterations.numpy()) - 1)
        return float(rate(step).numpy())
    return float(keras.backend.get_value(rate))
