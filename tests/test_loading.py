"""The one model loader: no code from a model file runs, no broken file crashes.

Lambda models (whose bytecode would write a marker file when run) are saved in the
zip `.keras` format and as HDF5 under a `.keras` name; loading either must leave
the marker unwritten. Truncated and corrupted `.tflite` files are opened in a child
process, so a SIGSEGV fails the test instead of killing pytest.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import pie  # noqa: F401
from pie.models import loading, tflite_child

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = ("allowed: the zip tf_keras 2 writes, of built-in layers without Lambda "
           "(docs/contracts.md, 'Model files are data')")


def _tiny_model(keras):
    return keras.Sequential([keras.layers.Input((6, 6, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(5)])


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    import tensorflow as tf
    import tf_keras as keras
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("tflite")
    content = tf.lite.TFLiteConverter.from_keras_model(_tiny_model(keras)).convert()
    path = folder / "model.tflite"
    path.write_bytes(content)
    return str(path)


def _lambda_model(marker):
    import tf_keras as keras
    # The lambda's code writes `marker` whenever the layer runs.
    action = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x)[1]")
    return keras.Sequential([keras.layers.Input((3,)), keras.layers.Lambda(action),
                             keras.layers.Dense(2)])


def test_lambda_in_zip_keras_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    path = str(tmp_path / "model.keras")
    _lambda_model(marker).save(path)
    marker.unlink()  # building the model ran the lambda once, before saving
    with pytest.raises(loading.ModelError) as error:
        loading.load_keras(path)
    assert str(error.value) == (
        f"model file {path} is refused: its config names a Lambda layer (Lambda layers "
        f"hold code); {ALLOWED}")
    assert not marker.exists()


def test_hdf5_named_keras_is_refused_before_loading(tmp_path):
    marker = tmp_path / "ran.txt"
    path = str(tmp_path / "model.keras")
    _lambda_model(marker).save(str(tmp_path / "model.h5"))
    os.rename(tmp_path / "model.h5", path)
    marker.unlink()
    with pytest.raises(loading.ModelError) as error:
        loading.load_keras(path)
    assert str(error.value) == (
        f"model file {path} is refused: it does not begin with a zip entry (an HDF5 or "
        f"other file: those can run code when loaded); {ALLOWED}")
    assert not marker.exists()


def test_a_plain_keras_model_loads_uncompiled(tmp_path):
    import tf_keras as keras
    model = _tiny_model(keras)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = loading.load_keras(path)
    inputs = np.random.default_rng(0).standard_normal((4, 6, 6, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0),
                                  model.predict(inputs, verbose=0))


@pytest.mark.parametrize("name, message", [
    ("model.h5", "is neither .keras nor .tflite: no other format is loaded"),
    ("saved_model", "is neither .keras nor .tflite: no other format is loaded"),
])
def test_other_formats_are_refused(tmp_path, name, message):
    path = str(tmp_path / name)
    with pytest.raises(loading.ModelError, match=message):
        loading.check(path)


def test_links_and_missing_files_are_refused(tmp_path, tflite_file):
    link = str(tmp_path / "model.tflite")
    os.symlink(tflite_file, link)
    with pytest.raises(loading.ModelError) as error:
        loading.load_tflite(link)
    assert str(error.value) == (f"model file {link} is not a regular file "
                                "(links are not followed)")
    missing = str(tmp_path / "none.keras")
    with pytest.raises(loading.ModelError, match=f"^model file missing at {missing}$"):
        loading.load_keras(missing)


def test_litert_is_the_interpreter_and_warns_nothing(tflite_file):
    assert loading.uses_litert()
    assert loading.interpreter_class().__module__ == "ai_edge_litert.interpreter"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interpreter = loading.load_tflite(tflite_file)
        interpreter.allocate_tensors()
    assert not [w for w in caught if "deprecat" in str(w.message).lower()]


def test_litert_and_tf_lite_give_the_same_outputs(tflite_file):
    import tensorflow as tf
    inputs = np.random.default_rng(1).standard_normal((7, 6, 6, 1)).astype(np.float32)

    def run(interpreter):
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], inputs)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = run(tf.lite.Interpreter(model_path=tflite_file))
    litert = run(loading.load_tflite(tflite_file))
    assert reference.shape == (7, 5)
    np.testing.assert_allclose(litert, reference, rtol=1e-6, atol=1e-6)


# Opens every broken variant of a model through the loader, in one child process:
# prints one line per case, "error" (a ModelError) or "ran"; a crash ends the output.
_FUZZ = r"""
import random, sys
import numpy as np
from pie.models import loading
content = open(sys.argv[1], "rb").read()
folder = sys.argv[2]
random.seed(0)
cases = [content[:n] for n in range(0, len(content), max(1, len(content) // 60))]
for _ in range(60):
    broken = bytearray(content)
    for _ in range(random.randint(1, 20)):
        broken[random.randrange(8, len(broken))] = random.randrange(256)
    cases.append(bytes(broken))
for number, case in enumerate(cases):
    path = f"{folder}/case{number}.tflite"
    open(path, "wb").write(case)
    try:
        interpreter = loading.load_tflite(path)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        print(number, "ran", flush=True)
    except loading.ModelError as error:
        assert "\n" not in str(error)
        print(number, "error", flush=True)
    except (ValueError, RuntimeError) as error:  # the interpreter's own refusals
        print(number, "refused", type(error).__name__, flush=True)
print("done")
"""


def test_truncated_and_corrupt_tflite_never_crash(tflite_file, tmp_path):
    done = subprocess.run([sys.executable, "-c", _FUZZ, tflite_file, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "done"
    outcomes = [line.split()[1] for line in lines[:-1]]
    # Every truncation (the first ~60 cases) is caught by the loader itself.
    truncated = len(range(0, os.path.getsize(tflite_file), max(1, os.path.getsize(tflite_file) // 60)))
    assert set(outcomes[:truncated]) == {"error"}
    assert outcomes.count("error") > truncated


def test_a_truncated_tflite_is_one_line(tmp_path, tflite_file):
    path = str(tmp_path / "model.tflite")
    with open(tflite_file, "rb") as source:
        content = source.read()
    with open(path, "wb") as handle:
        handle.write(content[:len(content) // 2])
    with pytest.raises(loading.ModelError) as error:
        loading.load_tflite(path)
    assert str(error.value).startswith(
        f"model file {path} is a truncated or corrupt TFLite flatbuffer (")
    assert "\n" not in str(error.value)


def test_sparse_int8_runs_without_xnnpack_and_matches_tf_lite(tmp_path):
    """LiteRT's XNNPACK refuses sparse int8 fully-connected layers; the member still runs."""
    import tensorflow as tf
    import tf_keras as keras
    from pie.compress import quantize as pq
    from pie.models import predict
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((6, 6, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16), keras.layers.Dense(5)])
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            weights[0][np.abs(weights[0]) < np.quantile(np.abs(weights[0]), 0.7)] = 0
            layer.set_weights(weights)
    rng = np.random.default_rng(0)
    representative = rng.standard_normal((16, 6, 6, 1)).astype(np.float32)
    path = str(tmp_path / "model.tflite")
    with open(path, "wb") as handle:
        handle.write(pq.convert(model, "pruned_int8", representative))
    inputs = rng.standard_normal((9, 6, 6, 1)).astype(np.float32)
    logits = predict.TFLiteMember(path).logits(inputs, batch_size=4)

    reference = tflite_child.InProcessMember(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.interpreter = tf.lite.Interpreter(model_path=path)
    reference.interpreter.allocate_tensors()
    assert logits.shape == (9, 5)
    np.testing.assert_array_equal(logits, reference.logits(inputs, batch_size=4))


def _saved_config(model):
    """The config.json tf_keras writes for `model` (serialised as model.save does)."""
    import json
    from tf_keras.src.saving import serialization_lib
    return json.loads(json.dumps(serialization_lib.serialize_keras_object(model)))


def test_every_model_the_toolkit_builds_passes_the_gate():
    """Each registry model's saved config is allowed (resnet32 and resnet56 repeat
    resnet20's blocks, built by the same function, so resnet20 stands for them)."""
    import tf_keras as keras
    from pie.models import builders, keras_gate
    assert builders.MODELS["resnet32"].__code__ is builders.MODELS["resnet20"].__code__
    for name in builders.MODELS:
        if name in ("resnet32", "resnet56"):
            continue
        width = 1 if name == "wrn28_k" else (4 if name in ("mlp", "small_cnn") else None)
        keras_gate.check_config(_saved_config(builders.build(name, (32, 32, 3), 10,
                                                             width=width)))
        keras.backend.clear_session()


def test_pruned_quantized_and_nested_models_pass_the_gate_and_load(tmp_path):
    """Saved files of every kind a stage or a user makes with the toolkit: tfmot's
    pruning wrappers (both schedules) and their stripped model, a quantization-aware
    model, a backbone nested in a model with preprocessing layers."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    from pie.models import builders
    sparsity = tfmot.sparsity.keras
    small = lambda: builders.build("small_cnn", (8, 8, 1), 5, width=2)  # noqa: E731
    wrapped = sparsity.prune_low_magnitude(
        small(), pruning_schedule=sparsity.PolynomialDecay(0.0, 0.5, 0, 10))
    constant = sparsity.prune_low_magnitude(
        builders.build("mlp", (8, 8, 1), 5, width=8),
        pruning_schedule=sparsity.ConstantSparsity(0.5, 0))
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.RandomFlip()(x)
    nested = keras.Model(inputs, small()(x))
    models = {"wrapped": wrapped, "constant": constant,
              "stripped": sparsity.strip_pruning(wrapped),
              "qat": tfmot.quantization.keras.quantize_model(small()), "nested": nested}
    for name, model in models.items():
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loading.check(path)
    with sparsity.prune_scope():
        loaded = loading.load_keras(str(tmp_path / "wrapped.keras"))
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in wrapped.layers]
    assert "PruneLowMagnitude" in [type(layer).__name__ for layer in loaded.layers]
    for name in ("stripped", "nested"):
        inputs = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
        np.testing.assert_allclose(
            loading.load_keras(str(tmp_path / f"{name}.keras")).predict(inputs, verbose=0),
            models[name].predict(inputs, verbose=0), rtol=1e-6, atol=1e-6)


def test_model_fuzz_smoke(tflite_file, tmp_path):
    """A few mutants of benchmarks/model_fuzz.py through its batch child (TFLite
    member in a child, then the cost stage's timing in the batch child): every file
    ran or was refused in one line; none crashed the batch child, none was uncaught."""
    import random
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import model_fuzz
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    files = model_fuzz.tflite_mutants([tflite_file], 6, str(tmp_path), random.Random(3))
    outcomes = {}
    model_fuzz.run_batch(files + [tflite_file], 120,
                         lambda path, outcome, text: outcomes.setdefault(path, outcome))
    assert outcomes[tflite_file] == "ran"
    assert set(outcomes) == set(files + [tflite_file])
    assert set(outcomes.values()) <= {"ran", "refused"}, outcomes
