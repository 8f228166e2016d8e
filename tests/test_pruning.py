import numpy as np
import pytest

from pie.compress import pruning
from pie.models import builders

import tensorflow_model_optimization as tfmot
import tf_keras as keras


def test_auto_schedule_lands_on_end_step():
    begin, end, frequency = pruning.auto_schedule_steps(504)
    assert begin == 50 and (end - begin) % frequency == 0 and end < 504


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="cubic"), "unknown schedule 'cubic'; allowed: polynomial, constant"),
    (dict(target=1.0), r"sparsity must be in \[0, 1\), got 1"),
    (dict(frequency=0), "pruning frequency must be at least 1, got 0"),
    (dict(end_step=10), r"end_step \(10\) must be after begin_step \(10\)"),
    (dict(end_step=25), r"end_step - begin_step \(15\) must be a multiple of the frequency "
                        r"\(10\), or the final sparsity is never applied"),
    (dict(total_steps=30), r"end_step \(30\) must be before the last training step \(30\)"),
    (dict(initial_sparsity=0.9), r"initial_sparsity must be in \[0, target=0.5\], got 0.9"),
])
def test_schedule_errors(kwargs, message):
    settings = dict(kind="polynomial", target=0.5, begin_step=10, end_step=30, frequency=10,
                    total_steps=100)
    settings.update(kwargs)
    with pytest.raises(pruning.PruningError, match=message):
        pruning.make_schedule(settings.pop("kind"), settings.pop("target"), **settings)


def test_prunes_every_conv_and_dense_but_the_classifier_to_target():
    keras.utils.set_random_seed(0)
    model = builders.build("small_cnn", (8, 8, 1), 10, width=4)
    assert pruning.prunable_layer_names(model) == ["conv1", "conv2", "dense1"]
    assert pruning.prunable_layer_names(model, include_classifier=True)[-1] == "classifier"
    schedule = pruning.make_schedule("polynomial", 0.75, begin_step=0, end_step=4, frequency=2,
                                     total_steps=8)
    wrapped = pruning.wrap_for_pruning(model, schedule)
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.RandomState(0).rand(64, 8, 8, 1).astype("float32")
    y = np.arange(64) % 10
    wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = pruning.strip(wrapped)
    per_layer, overall = pruning.kernel_sparsity(stripped, ["conv1", "conv2", "dense1"])
    pruning.check_sparsity(per_layer, 0.75)
    assert abs(overall - 0.75) < 0.005
    classifier = stripped.get_layer("classifier").kernel.numpy()
    assert np.count_nonzero(classifier == 0) == 0


def test_check_sparsity_fails_loudly():
    with pytest.raises(pruning.PruningError, match="measured sparsity misses the target 0.9 by "
                       "more than 0.5 points: conv1=0.8000"):
        pruning.check_sparsity({"conv1": 0.8, "dense1": 0.9}, 0.9)
