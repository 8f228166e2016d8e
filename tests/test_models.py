import numpy as np
import pytest

from pie.models import builders

import tensorflow_model_optimization as tfmot
import tf_keras as keras

# Small inputs and widths keep every architecture cheap to build.
CASES = [
    ("small_cnn", (8, 8, 1), 4),
    ("mlp", (2,), 8),
    ("resnet20", (32, 32, 3), 4),
    ("resnet32", (32, 32, 3), 2),
    ("resnet56", (32, 32, 3), 2),
    ("resnet18", (32, 32, 3), 4),
    ("wrn28_k", (32, 32, 3), 1),
    ("resnet50", (32, 32, 3), None),
]


@pytest.mark.parametrize("name, shape, width", CASES)
def test_builds_functional_keras2_model_that_tfmot_prunes(name, shape, width):
    model = builders.build(name, shape, num_classes=5, width=width)
    assert isinstance(model, keras.Model) and model._is_graph_network  # functional, not subclassed
    assert model.layers[-1].name == builders.CLASSIFIER
    assert model.output_shape == (None, 5)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    logits = pruned(np.zeros((2,) + shape, np.float32), training=False)
    assert logits.shape == (2, 5)


def _conv(kernel, channels_in, channels_out):
    return kernel * kernel * channels_in * channels_out  # no bias: batch norm follows


def _bn(channels):
    return 2 * channels  # gamma and beta; the moving statistics are not trained


def _cifar_resnet_option_a(blocks, classes=10):
    """Trainable weights of He et al.'s CIFAR ResNet-(6n+2) with identity (zero-padded,
    option A) shortcuts, counted layer by layer."""
    count, channels = _conv(3, 3, 16) + _bn(16), 16
    for filters in (16, 32, 64):
        for _ in range(blocks):
            count += _conv(3, channels, filters) + _conv(3, filters, filters) + 2 * _bn(filters)
            channels = filters
    return count + 64 * classes + classes


# The builders use 1x1 projection shortcuts (option B) where the shape changes:
# 16->32 and 32->64 channels, each with its batch norm.
PROJECTIONS = _conv(1, 16, 32) + _bn(32) + _conv(1, 32, 64) + _bn(64)


def _resnet18(stem_kernel, classes):
    """ResNet-18 (He et al. 2016, basic blocks, 1x1 projections) with a given stem."""
    count, channels = _conv(stem_kernel, 3, 64) + _bn(64), 64
    for filters in (64, 128, 256, 512):
        for block in range(2):
            count += _conv(3, channels, filters) + _conv(3, filters, filters) + 2 * _bn(filters)
            if channels != filters:
                count += _conv(1, channels, filters) + _bn(filters)
            channels = filters
    return count + 512 * classes + classes


def _wide_resnet_28(k, classes=10):
    """WRN-28-k (Zagoruyko & Komodakis 2016): pre-activation blocks, 4 a stage, a 1x1
    projection where the width changes, a final batch norm."""
    count, channels = _conv(3, 3, 16), 16
    for filters in (16 * k, 32 * k, 64 * k):
        for _ in range(4):
            count += _bn(channels) + _conv(3, channels, filters) + _bn(filters)
            count += _conv(3, filters, filters)
            if channels != filters:
                count += _conv(1, channels, filters)
            channels = filters
    return count + _bn(channels) + channels * classes + classes


def test_the_counts_are_the_published_sizes():
    """The layer-by-layer counts below, at the precision each source prints: He et al.
    2016 Table 6 (ResNet-20/32/56 on CIFAR-10, option A: 0.27M, 0.46M, 0.85M);
    torchvision's ResNet-18 (ImageNet, 1,000 classes: 11.69M) and the CIFAR ResNet-18
    of the pruning literature (3x3 stem: 11.17M); Zagoruyko & Komodakis 2016 Table 1
    (WRN-28-10: 36.5M)."""
    assert [round(_cifar_resnet_option_a(n) / 1e6, 2) for n in (3, 5, 9)] == [0.27, 0.46, 0.85]
    assert round(_resnet18(7, 1000) / 1e6, 2) == 11.69
    assert round(_resnet18(3, 10) / 1e6, 2) == 11.17
    assert round(_wide_resnet_28(10) / 1e6, 1) == 36.5


@pytest.mark.parametrize("name, shape, classes, width, expected", [
    ("resnet20", (32, 32, 3), 10, None, _cifar_resnet_option_a(3) + PROJECTIONS),
    ("resnet32", (32, 32, 3), 10, None, _cifar_resnet_option_a(5) + PROJECTIONS),
    ("resnet56", (32, 32, 3), 10, None, _cifar_resnet_option_a(9) + PROJECTIONS),
    ("resnet18", (32, 32, 3), 10, None, _resnet18(3, 10)),
    ("resnet18", (64, 64, 3), 1000, None, _resnet18(7, 1000)),
    ("wrn28_k", (32, 32, 3), 10, 10, _wide_resnet_28(10)),
    # No published size: counted by hand (28x28 input, two 2x2 pools leave 7x7x32).
    ("small_cnn", (28, 28, 1), 10, None,
     (9 * 16 + 16) + (9 * 16 * 32 + 32) + (7 * 7 * 32 * 64 + 64) + (64 * 10 + 10)),
    ("mlp", (2,), 10, None, (2 * 1000 + 1000) + 2 * (1000 * 1000 + 1000) + 1000 * 10 + 10),
])
def test_trainable_weights_match_the_published_architecture(name, shape, classes, width,
                                                            expected):
    model = builders.build(name, shape, num_classes=classes, width=width)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == expected


def test_same_seed_same_initial_weights():
    keras.utils.set_random_seed(3)
    first = builders.build("small_cnn", (8, 8, 1), 10).get_weights()
    keras.utils.set_random_seed(3)
    second = builders.build("small_cnn", (8, 8, 1), 10).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_errors():
    with pytest.raises(builders.ModelError, match="unknown model 'vgg'; allowed: small_cnn, mlp"):
        builders.build("vgg", (8, 8, 1), 10)
    with pytest.raises(builders.ModelError, match="num_classes must be at least 2, got 1"):
        builders.build("mlp", (2,), 1)
    with pytest.raises(builders.ModelError, match="width must be a positive integer, got 0"):
        builders.build("mlp", (2,), 2, width=0)
    with pytest.raises(builders.ModelError, match="resnet50_keras has no --width"):
        builders.build("resnet50_keras", (32, 32, 3), 2, width=2)


# --- the study's ResNet-50 v1 (issue 27) ---------------------------------------------

def test_resnet50_is_the_studys_v1():
    """25,557,032 trainable parameters at 1,000 classes (the TF official model's count;
    the count does not depend on the input size, so it is built small), bias-free
    convolutions, BN momentum 0.9 / epsilon 1e-5, the stride on each stage's first
    1x1, and every block's last BN gamma zero at initialisation."""
    import numpy as np
    import tf_keras as keras
    model = builders.build("resnet50", (32, 32, 3), 1000)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 25_557_032
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(layer.use_bias for layer in convs)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(layer.momentum, layer.epsilon) for layer in norms} == {(0.9, 1e-5)}
    last = [layer for layer in norms if layer.name.endswith("_c_bn")]
    assert len(last) == 3 + 4 + 6 + 3
    assert all(not layer.gamma.numpy().any() for layer in last)
    assert all(layer.gamma.numpy().all() for layer in norms if layer not in last)
    firsts = [model.get_layer(f"s{stage}b1_a_conv") for stage in (2, 3, 4)]
    assert all(layer.strides == (2, 2) and layer.kernel_size == (1, 1) for layer in firsts)
    assert model.get_layer("s2b1_b_conv").strides == (1, 1)
    # At initialisation every block is its shortcut: the zero gamma silences the branch.
    block = keras.Model(model.input, [model.get_layer("s1b2_c_bn").output])
    assert not block(np.ones((1, 32, 32, 3), np.float32)).numpy().any()


def _resnet50_trainable(width, num_classes):
    """ResNet-50 v1's trainable parameters counted by hand: a 7x7 stem of `width`
    filters, bottlenecks [3, 4, 6, 3] of widths w, 2w, 4w, 8w (1x1, 3x3, 1x1 x4, a
    1x1 projection in each stage's first block), BN gamma and beta, no conv bias."""
    count = 7 * 7 * 3 * width + 2 * width
    channels = width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        mid = width * 2 ** stage
        for block in range(blocks):
            count += channels * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * 4 * mid + 8 * mid
            if block == 0:
                count += channels * 4 * mid + 8 * mid
            channels = 4 * mid
    return count + channels * num_classes + num_classes


def test_resnet50_width_scales_every_stage():
    """--width is the stem's filters and the first stage's bottleneck width: 64 is the
    published model (the hand count gives its 25,557,032), 8 the smoke study's."""
    import numpy as np
    assert _resnet50_trainable(64, 1000) == 25_557_032
    for width in (8, 64):
        model = builders.build("resnet50", (32, 32, 3), 4, width=width)
        assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == \
            _resnet50_trainable(width, 4)
        assert model.get_layer("stem_conv").filters == width
        assert [model.get_layer(f"s{stage}b1_b_conv").filters for stage in (1, 2, 3, 4)] == \
            [width, 2 * width, 4 * width, 8 * width]
    default = builders.build("resnet50", (32, 32, 3), 4)
    assert [w.shape for w in default.weights] == [
        w.shape for w in builders.build("resnet50", (32, 32, 3), 4, width=64).weights]


def test_resnet50_keras_graph_is_kept_under_its_own_name():
    assert builders.MODELS["resnet50_keras"] is builders.resnet50_keras
    assert builders.resnet50_keras.__doc__.startswith("ResNet-50 v1 as Keras applications")
