import numpy as np
import pytest

from pie.compress import pruning
from pie.models import builders

import tensorflow_model_optimization as tfmot
import tf_keras as keras


@pytest.mark.parametrize("total_steps", [20, 100, 504])
def test_auto_schedule_ramps_from_10_to_60_percent_in_10_mask_updates(total_steps):
    """docs/training.md: the default schedule ramps from 10% to 60% of the training
    steps in 10 mask updates; the rest fine-tunes at the final sparsity. Checked on
    the schedule tfmot runs, step by step."""
    import tensorflow as tf
    begin, end, frequency = pruning.auto_schedule_steps(total_steps)
    schedule = pruning.make_schedule("polynomial", 0.9, begin_step=begin, end_step=end,
                                     frequency=frequency, total_steps=total_steps)
    updates, sparsities = [], []
    for step in range(total_steps):
        prune, sparsity = schedule(tf.constant(step, tf.int64))
        if bool(prune):
            updates.append(step)
            sparsities.append(float(sparsity))
    assert updates[0] == begin == total_steps // 10
    # The last update is the last step at or before 60% of training that the
    # frequency reaches; it sets the final sparsity, and nothing is pruned after it.
    assert updates[-1] == end and 0.6 * total_steps - frequency < end <= 0.6 * total_steps
    assert updates == list(range(begin, end + 1, frequency))
    # The update at begin_step applies the initial sparsity (0); 10 more raise it.
    assert sparsities[0] == 0.0 and len(sparsities) == 11
    assert all(later > earlier for earlier, later in zip(sparsities, sparsities[1:]))
    assert sparsities[-1] == pytest.approx(0.9)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="cubic"), "unknown schedule 'cubic'; allowed: polynomial, constant"),
    (dict(target=1.0), r"sparsity must be in \[0, 1\), got 1"),
    (dict(frequency=0), "pruning frequency must be at least 1, got 0"),
    (dict(end_step=10), r"end_step \(10\) must be after begin_step \(10\)"),
    (dict(end_step=25), r"end_step - begin_step \(15\) must be a multiple of the frequency "
                        r"\(10\), or the final sparsity is never applied"),
    (dict(total_steps=30), r"end_step \(30\) must be before the last training step \(30: "
                           r"--epochs x steps per epoch\): set --end_step below 30"),
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


@pytest.mark.parametrize("kind", ["polynomial", "constant"])
def test_retargetable_schedule_gives_the_stock_schedules_sparsity_at_every_step(kind):
    import tensorflow as tf
    settings = dict(begin_step=10, end_step=50, frequency=10, power=3, total_steps=100)
    movable = pruning.make_schedule(kind, 0.5, retargetable=True, **settings)
    for target in (0.5, 0.8, 0.95):
        movable.retarget(target)
        stock = pruning.make_schedule(kind, target, **settings)
        assert movable.target == pytest.approx(target)
        for step in (0, 10, 17, 30, 50, 70):
            step = tf.constant(step, tf.int64)
            (prune_a, sparsity_a), (prune_b, sparsity_b) = movable(step), stock(step)
            assert bool(prune_a) == bool(prune_b)
            assert float(sparsity_a) == float(sparsity_b)  # the same float32, bit for bit
    config = movable.get_config()
    assert config == stock.get_config()  # read back as tfmot's own schedule
    with pytest.raises(pruning.PruningError, match=r"sparsity must be in \[0, 1\), got 1"):
        movable.retarget(1.0)


def test_retarget_sets_every_wrapper_of_a_model_and_refuses_fixed_targets():
    keras.utils.set_random_seed(0)
    plain = builders.build("small_cnn", (8, 8, 1), 3, width=4)
    settings = dict(begin_step=0, end_step=10, frequency=1)
    movable = pruning.wrap_for_pruning(
        plain, pruning.make_schedule("polynomial", 0.5, retargetable=True, **settings))
    pruning.retarget(movable, 0.75)
    wrappers = [layer for layer in movable.submodules if hasattr(layer, "pruning_schedule")]
    assert len(wrappers) == 3
    assert all(layer.pruning_schedule.target == 0.75 for layer in wrappers)
    fixed = pruning.wrap_for_pruning(plain, pruning.make_schedule("polynomial", 0.5, **settings))
    with pytest.raises(pruning.PruningError, match="the model's pruning schedule has a fixed "
                                                   "target"):
        pruning.retarget(fixed, 0.75)


def test_loading_tfmot_does_not_import_keras_3():
    # tfmot probes a Keras 2.13 module layout before its fallback; pie marks those
    # modules absent so the probe fails without importing Keras 3 (2 s a stage).
    import subprocess
    import sys
    code = ("import sys, warnings\n"
            "filters = list(warnings.filters)\n"
            "import pie\n"  # changes no warning filter and no module table entry
            "assert list(warnings.filters) == filters\n"
            "assert not any(name.startswith('keras') for name in sys.modules)\n"
            "from pie.compress import tfmot_loader\n"
            "tfmot_loader.load()\n"
            "from tensorflow_model_optimization.python.core.sparsity.keras import "
            "prune_registry\n"
            "assert prune_registry.base_layer is None\n"  # tfmot's fallback, as before
            "print(sorted(m for m in ('keras', 'matplotlib', 'sklearn') if m in sys.modules))\n"
            "import keras\n"  # still importable when a user wants it
            "print(keras.__version__.split('.')[0])\n")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split("\n")
    assert output[0] == "[]"
    assert int(output[1]) >= 3
