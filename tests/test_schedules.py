"""Training recipes (pie.compress.schedules): the learning rate of every epoch as the
formula gives it, weight decay on kernels only, and bad recipe flags."""
import math
import os

import numpy as np
import pandas as pd
import pytest

from conftest import error_lines, run_stage
from pie.compress import history, schedules
from pie.io import errors
from pie.io.workdir import Workdir


def test_step_schedule_with_warmup_as_the_formula_in_history(tmp_path):
    workdir = str(tmp_path / "w")
    run_stage("save_checkpoint.train", f"--workdir={workdir}", "--dataset=digits",
              "--model=mlp", "--width=8", "--sparsities=0", "--seeds=1", "--epochs=10",
              "--optimizer=sgd", "--learning_rate=0.2", "--lr_schedule=step",
              "--warmup_epochs=2", "--lr_decay_epochs=5,8", "--lr_decay_factor=0.1")
    relpath = os.path.join("checkpoints", "dense", "sparsity_0", "seed_0")
    rows = pd.read_csv(Workdir(workdir).member_file(relpath, "history"))
    assert list(rows.columns) == list(history.COLUMNS)
    assert rows["epoch"].tolist() == list(range(1, 11))
    steps_per_epoch = int(rows["step"][0])
    assert rows["step"].tolist() == [steps_per_epoch * e for e in range(1, 11)]
    # The rate of each epoch's last step: warm-up over epochs 1-2 reaching the base
    # rate, x0.1 once 5 epochs are done and again once 8 are.
    expected = [0.2 * min(1.0, (e + 1) / 2) * 0.1 ** ((e >= 5) + (e >= 8)) for e in range(10)]
    np.testing.assert_allclose(rows["learning_rate"], expected, rtol=1e-6)
    assert np.isfinite(rows["loss"]).all() and (rows["sparsity"] == 0).all()
    meta = pd.read_json(Workdir(workdir).member_file(relpath, "meta"), typ="series")
    assert meta["lr_schedule"] == "step" and meta["lr_decay_epochs"] == [5.0, 8.0]
    assert meta["warmup_epochs"] == 2.0 and meta["precision"] == "float32"


@pytest.mark.parametrize("kind", schedules.SCHEDULES)
def test_keras_schedule_equals_the_python_formula(kind):
    recipe = schedules.validate(kind, warmup_epochs=1.5,
                                decay_epochs="3,7" if kind == "step" else "",
                                decay_factor=0.5, lr_per_256=True)
    schedule = schedules.schedule_for(recipe, 0.1, 512, steps_per_epoch=10, epochs=10)
    got = [float(schedule(step)) for step in range(100)]
    want = [schedules.rate_at(recipe, 0.1, 512, 10, 10, step) for step in range(100)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)  # float32
    # 0.1 x 512 / 256 = 0.2, reached at the last of the 15 warm-up steps.
    assert want[0] == pytest.approx(0.2 / 15) and want[14] == pytest.approx(0.2)
    if kind == "cosine":
        assert want[15] == pytest.approx(0.2) and want[99] < 0.001
    if kind == "polynomial":
        assert want[99] == pytest.approx(0.2 * (1 / 85) ** 2)
    if kind == "step":
        assert (want[29], want[30], want[70]) == pytest.approx((0.2, 0.1, 0.05))


def _model():
    """A kernel, a bias, a batch norm's gamma/beta: which of them decay."""
    import tf_keras as keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="classifier", bias_initializer="ones")(x)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.gamma.assign(np.full(2, 1.5, np.float32))
    bn.beta.assign(np.full(2, 0.25, np.float32))
    return model


@pytest.mark.parametrize("mode", schedules.WEIGHT_DECAY_MODES)
@pytest.mark.parametrize("name", schedules.OPTIMIZERS)
def test_weight_decay_shrinks_kernels_only(name, mode):
    """One step on zero gradients: without decay nothing moves; with it the kernels
    shrink (SGD: by the exact factor of each form) and gamma, beta, biases stay."""
    import tensorflow as tf
    after = {}
    for decay in (0.0, 0.1):
        model = _model()  # the same initial weights in both runs
        before = {v.name: v.numpy() for v in model.trainable_variables}
        recipe = schedules.validate(weight_decay=decay, weight_decay_mode=mode)
        # Adam moves each weight by about lr whatever its gradient: a small lr.
        optimizer = schedules.build_optimizer(name, 0.01 if name == "adam" else 0.5, recipe)
        optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
        after[decay] = {v.name: v.numpy() for v in model.trainable_variables}
    for variable, value in before.items():
        if variable.endswith("kernel:0"):
            np.testing.assert_array_equal(after[0.0][variable], value)
            assert np.abs(after[0.1][variable]).sum() < np.abs(value).sum()
            if name != "adam":
                # l2: g = wd w, with Nesterov momentum 0.9 w - lr g (1 + 0.9), with
                # heavy-ball momentum w - lr g; decoupled: w - lr wd w.
                factor = 1 - 0.5 * 0.1 * (1.9 if mode == "l2" and name == "sgd" else 1.0)
                np.testing.assert_allclose(after[0.1][variable], value * factor, rtol=1e-6)
        else:
            np.testing.assert_array_equal(after[0.1][variable], value)
            np.testing.assert_array_equal(after[0.0][variable], value)
    assert {v for v in before if not v.endswith("kernel:0")} == {
        "bn/gamma:0", "bn/beta:0", "classifier/bias:0"}


def test_default_recipe_is_todays_optimizer():
    import tf_keras as keras
    optimizer = schedules.build_optimizer("sgd", 0.05, schedules.validate())
    assert type(optimizer) is keras.optimizers.SGD and optimizer.nesterov
    assert optimizer.weight_decay is None
    assert float(keras.backend.get_value(optimizer.learning_rate)) == pytest.approx(0.05)
    assert type(schedules.build_optimizer("adam", 1e-3)) is keras.optimizers.Adam


@pytest.mark.parametrize("flag, message", [
    ("--warmup_epochs=-1", "--warmup_epochs must be at least 0, got -1"),
    ("--lr_decay_epochs=8,5", "--lr_decay_epochs must be strictly increasing positive "
                              "numbers of epochs, comma-separated, got '8,5'"),
    ("--weight_decay=-1", "--weight_decay must be at least 0, got -1"),
    ("--lr_decay_factor=2", "--lr_decay_factor must be in (0, 1], got 2"),
    ("--precision=float8", "flag --precision=float8: value should be one of "
                           "<float32|mixed_float16|mixed_bfloat16>"),
])
def test_bad_recipe_flags_are_one_line(tmp_path, flag, message):
    workdir = tmp_path / "w"
    args = [f"--workdir={workdir}", "--dataset=digits", "--lr_schedule=step",
            "--lr_decay_epochs=3", flag]
    with pytest.raises(errors.UsageError) as raised:
        _train_config_of_argv(args)
    assert str(raised.value) == message
    assert not workdir.exists()


def _train_config_of_argv(args):
    """The training stage's command line as its main reads it: the flags parsed (a bad
    enum value is absl's own one line), then checked into a TrainConfig."""
    from absl import flags
    from pie.compress.config import TrainConfig
    from pie.io import cli
    from save_checkpoint import train
    values = flags.FlagValues()
    train.define_flags(values)
    try:
        values(["train", *args])
    except flags.Error as error:
        raise errors.UsageError(str(error).splitlines()[0])
    return cli.config_from_flags(TrainConfig, values)


def test_bad_recipe_flag_exits_2_with_one_line(tmp_path):
    workdir = tmp_path / "w"
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", "--dataset=digits",
                       "--lr_schedule=step", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: --lr_schedule=step needs --lr_decay_epochs (the epochs after which the rate "
        "is multiplied by --lr_decay_factor)"]
    assert not workdir.exists()


def test_decay_epochs_need_the_step_schedule():
    with pytest.raises(errors.UsageError, match=r"^--lr_decay_epochs applies only to "
                                                r"--lr_schedule=step, got --lr_schedule=cosine$"):
        schedules.validate("cosine", decay_epochs="30")
    assert math.isclose(schedules.base_rate(0.1, 4096, True), 1.6)


def test_history_and_recipe_are_documented():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    contracts = open(os.path.join(root, "docs", "contracts.md")).read()
    line = next(text for text in contracts.splitlines() if text.startswith("- `history.csv`"))
    assert all(f"`{column}`" in line for column in history.COLUMNS)
    training = open(os.path.join(root, "docs", "training.md")).read()
    for flag in ("lr_schedule", "warmup_epochs", "lr_decay_epochs", "lr_decay_factor",
                 "weight_decay", "weight_decay_mode", "lr_per_256", "precision",
                 "jit_compile"):
        assert f"`--{flag}`" in training and f"`{flag}`" in line, flag


def test_history_rows_survive_a_resume(tmp_path):
    """A member resumed after epoch 2 keeps rows 1-2 as written, replaces the row of the
    epoch it trains again (killed before its checkpoint) and appends the rest."""
    import tf_keras as keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="classifier")])
    recipe = schedules.validate("step", decay_epochs="2", decay_factor=0.5)
    model.compile(optimizer=schedules.build_optimizer("sgd", 0.1, recipe, steps_per_epoch=4,
                                                      epochs=4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["acc"])
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    path = str(tmp_path / "history.csv")
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[history.HistoryCSV(path)])
    first = pd.read_csv(path)
    assert first["epoch"].tolist() == [1, 2, 3] and first["step"].tolist() == [4, 8, 12]
    np.testing.assert_allclose(first["learning_rate"], [0.1, 0.1, 0.05], rtol=1e-6)
    model.fit(x, y, batch_size=4, epochs=4, initial_epoch=2, verbose=0,
              callbacks=[history.HistoryCSV(path)])
    resumed = pd.read_csv(path)
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(resumed.iloc[:2], first.iloc[:2])
    assert resumed["step"].tolist()[2:] == [16, 20]  # this optimizer went on counting
    assert np.isfinite(resumed[["loss", "accuracy", "wall_time_s"]].to_numpy()).all()
