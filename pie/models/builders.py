"""Model builders selected by `--model`, all functional `tf_keras` models.

tfmot's `prune_low_magnitude` rejects subclassed models and Keras 3 models, so
every builder returns a functional Keras 2 model. Every model outputs logits, and
its last layer is the Dense layer named `classifier` (which magnitude pruning
leaves dense by default, as the original study did). Each builder imports tf_keras
itself: the registry's names (`MODELS`, `validate_name`) serve the training stage's
flags, which are checked without loading TensorFlow.
"""
import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors

CLASSIFIER = "classifier"
MLP_WIDTH = 1000
MLP_DEPTH = 3
WRN_WIDTH = 10


ModelError = errors.ModelError


def _classifier(x, num_classes):
    import tf_keras as keras
    from tf_keras import layers
    # Under a mixed-precision policy (--precision) the logits stay float32: softmax
    # and the loss of 16-bit logits lose precision. Under float32 the layer is as it
    # always was (no explicit dtype in its config).
    mixed = keras.mixed_precision.global_policy().compute_dtype != "float32"
    options = {"dtype": "float32"} if mixed else {}
    return layers.Dense(num_classes, name=CLASSIFIER, **options)(x)


def small_cnn(input_shape, num_classes, width=None):
    """Two conv blocks and a hidden Dense layer: enough for digits and MNIST."""
    import tf_keras as keras
    from tf_keras import layers
    base = width or DEFAULT_WIDTHS["small_cnn"]
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(base, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(2 * base, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(4 * base, activation="relu", name="dense1")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="small_cnn")


def mlp(input_shape, num_classes, width=None):
    """Three hidden ReLU layers (dropout 0.5 after the first), as in the toy study."""
    import tf_keras as keras
    from tf_keras import layers
    width = width or MLP_WIDTH
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for depth in range(MLP_DEPTH):
        x = layers.Dense(width, activation="relu", name=f"dense{depth + 1}")(x)
        if depth == 0:
            x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="mlp")


def _conv_bn(x, filters, kernel, stride, name, relu=True):
    from tf_keras import layers
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, stride, name):
    from tf_keras import layers
    shortcut = x
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _cifar_resnet(depth):
    blocks = (depth - 2) // 6

    def build(input_shape, num_classes, width=None):
        import tf_keras as keras
        from tf_keras import layers
        base = width or DEFAULT_WIDTHS[f"resnet{depth}"]
        inputs = keras.Input(input_shape)
        x = _conv_bn(inputs, base, 3, 1, "stem")
        for stage, filters in enumerate((base, 2 * base, 4 * base)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _basic_block(x, filters, stride, f"s{stage + 1}b{block + 1}")
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, _classifier(x, num_classes), name=f"resnet{depth}")
    build.__doc__ = f"ResNet-{depth} for 32x32 images (He et al. 2016, {blocks} blocks a stage)."
    return build


def resnet18(input_shape, num_classes, width=None):
    """ResNet-18; an ImageNet stem for large images, a 3x3 stem for small ones."""
    import tf_keras as keras
    from tf_keras import layers
    base = width or DEFAULT_WIDTHS["resnet18"]
    inputs = keras.Input(input_shape)
    if input_shape[0] is None or input_shape[0] >= 64:
        x = _conv_bn(inputs, base, 7, 2, "stem")
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    else:
        x = _conv_bn(inputs, base, 3, 1, "stem")
    for stage, filters in enumerate((base, 2 * base, 4 * base, 8 * base)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"s{stage + 1}b{block + 1}")
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="resnet18")


def wrn28_k(input_shape, num_classes, width=None):
    """Wide ResNet 28-k (pre-activation, 4 blocks a stage); `width` is k."""
    import tf_keras as keras
    from tf_keras import layers
    k = width or WRN_WIDTH
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    for stage, filters in enumerate((16 * k, 32 * k, 64 * k)):
        for block in range(4):
            name = f"s{stage + 1}b{block + 1}"
            stride = 2 if stage > 0 and block == 0 else 1
            pre = layers.ReLU(name=f"{name}_pre_relu")(layers.BatchNormalization(
                name=f"{name}_pre_bn")(x))
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{name}_a_conv")(pre)
            y = layers.ReLU(name=f"{name}_b_relu")(layers.BatchNormalization(
                name=f"{name}_b_bn")(y))
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"{name}_b_conv")(y)
            if stride != 1 or x.shape[-1] != filters:
                x = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                  name=f"{name}_proj_conv")(pre)
            x = layers.Add(name=f"{name}_add")([x, y])
    x = layers.ReLU()(layers.BatchNormalization(name="final_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _classifier(x, num_classes), name=f"wrn28_{k}")


# The study's ResNet-50 v1 (Hooker et al., the TF official model of the time).
RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (bottleneck width, blocks)
RESNET50_BN_MOMENTUM = 0.9
RESNET50_BN_EPSILON = 1e-5
BOTTLENECK_EXPANSION = 4


def _v1_conv_bn(x, filters, kernel, stride, name, relu=True, zero_gamma=False):
    from tf_keras import layers
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=RESNET50_BN_MOMENTUM, epsilon=RESNET50_BN_EPSILON,
                                  gamma_initializer="zeros" if zero_gamma else "ones",
                                  name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck_v1(x, width, stride, name):
    """1x1 (strided, v1) -> 3x3 -> 1x1 x4, the last BN's gamma zero: each residual
    block starts as the identity (the shortcut alone)."""
    from tf_keras import layers
    out = width * BOTTLENECK_EXPANSION
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = _v1_conv_bn(x, out, 1, stride, f"{name}_proj", relu=False)
    y = _v1_conv_bn(x, width, 1, stride, f"{name}_a")
    y = _v1_conv_bn(y, width, 3, 1, f"{name}_b")
    y = _v1_conv_bn(y, out, 1, 1, f"{name}_c", relu=False, zero_gamma=True)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet50(input_shape, num_classes, width=None):
    """The study's ResNet-50 v1: bottleneck blocks [3, 4, 6, 3] with the stride on
    each stage's first 1x1 convolution, bias-free convolutions, BN momentum 0.9 and
    epsilon 1e-5, the last BN gamma of every block initialised to zero; a 7x7/2
    stem (explicit 3-pixel padding) and 3x3/2 max pooling. 25,557,032 parameters
    at 1,000 classes.

    `width` is the stem's filters and the first stage's bottleneck width (64, the
    published model, when not given); every stage scales with it (the smoke study's
    miniature runs at 16, pie.stages.smoke)."""
    import tf_keras as keras
    from tf_keras import layers
    base = width or RESNET50_STAGES[0][0]
    scale = base / RESNET50_STAGES[0][0]
    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(3, name="stem_pad")(inputs)
    x = layers.Conv2D(base, 7, strides=2, padding="valid", use_bias=False,
                      kernel_initializer="he_normal", name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=RESNET50_BN_MOMENTUM, epsilon=RESNET50_BN_EPSILON,
                                  name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (width_, blocks) in enumerate(RESNET50_STAGES):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck_v1(x, round(width_ * scale), stride, f"s{stage + 1}b{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="resnet50")


def resnet50_keras(input_shape, num_classes, width=None):
    """ResNet-50 v1 as Keras applications builds it (conv biases, BN epsilon
    1.001e-5, no zero-initialised gamma; random init) with our classifier."""
    import tf_keras as keras
    if width:
        raise ModelError("resnet50_keras has no --width")
    backbone = keras.applications.ResNet50(include_top=False, weights=None,
                                           input_shape=input_shape, pooling="avg")
    return keras.Model(backbone.input, _classifier(backbone.output, num_classes),
                       name="resnet50_keras")


MODELS = {
    "small_cnn": small_cnn,
    "mlp": mlp,
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet56": _cifar_resnet(56),
    "resnet18": resnet18,
    "wrn28_k": wrn28_k,
    "resnet50": resnet50,
    "resnet50_keras": resnet50_keras,
}


def validate_name(name):
    if name not in MODELS:
        raise ModelError(f"unknown model '{name}'; allowed: {', '.join(MODELS)}")


# Each model's width when --width is not given (its builder's default): what
# distillation halves for its default student.
DEFAULT_WIDTHS = {"small_cnn": 16, "mlp": MLP_WIDTH, "resnet20": 16, "resnet32": 16,
                  "resnet56": 16, "resnet18": 64, "wrn28_k": WRN_WIDTH,
                  "resnet50": RESNET50_STAGES[0][0]}


def default_width(name):
    """The width `name` is built at without --width; None for a model without one."""
    validate_name(name)
    return DEFAULT_WIDTHS.get(name)


def build(name, input_shape, num_classes, width=None):
    """A fresh model from the registry; `width` is the model's own width knob."""
    validate_name(name)
    if num_classes < 2:
        raise ModelError(f"num_classes must be at least 2, got {num_classes}")
    if width is not None and width < 1:
        raise ModelError(f"width must be a positive integer, got {width}")
    return MODELS[name](tuple(input_shape), num_classes, width=width)
