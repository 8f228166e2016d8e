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
