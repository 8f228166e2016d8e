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
    with pytest.raises(builders.ModelError, match="resnet50 has no --width"):
        builders.build("resnet50", (32, 32, 3), 2, width=2)


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


def test_resnet50_keras_graph_is_kept_under_its_own_name():
    assert builders.MODELS["resnet50_keras"] is builders.resnet50_keras
    assert builders.resnet50_keras.__doc__.startswith("ResNet-50 v1 as Keras applications")
