"""Hostile model files: refused with one line, their payload never run, on every path.

Each payload is a `.keras` file an attacker could share. The code payloads write a
canary file when they run (a Lambda of type "function" naming `builtins.eval`,
`builtins.exec` or `os.system`, called by Keras on a constant-string input node; a
`load_model` chain to an HDF5 model whose Lambda bytecode writes it; a config
naming a module whose import writes it). `test_the_code_payloads_are_live` shows
that tf_keras's own `load_model(safe_mode=True)` runs them, so the canary checks of
the other tests mean something. The container payloads are an HDF5+zip polyglot,
zip-slip entries (`../`, absolute) and a zip bomb (1 GiB of zeros in 1 MB).

Every payload goes through `pie.models.loading` directly, then through every stage
that loads a model (predictions, quantize, cost, informative-features,
`--init_from` of train, import-members) in this process (the refusal is the
stage's one error line), and one stage per payload family runs as a command.
"""
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

import pie  # noqa: F401
from pie.io import errors
from pie.models import loading

from conftest import ROOT, problem_lines
from test_bad_input import (COST, DENSE0, FEATURES, FEATURES_OPTIONS, IMPORT, PREDICT,
                            QUANTIZE, TRAIN, _broken_copy, _command_line, _stage, base,
                            snapshot, tiny_models)

assert base and tiny_models  # fixtures of test_bad_input, used here by name

ALLOWED = ("allowed: the zip tf_keras 2 writes, of built-in layers without Lambda "
           "(docs/contracts.md, 'Model files are data')")
BOMB_BYTES = 1 << 30


# ------------------------------------------------------------------ zip writing


def zip_bytes(entries):
    """A zip of (name, content) entries, written by hand so that duplicate, `../` and
    absolute names stay as given; `content` is stored bytes or (deflated data, crc,
    size)."""
    local, central, offset = [], [], 0
    for name, content in entries:
        raw = name.encode()
        if isinstance(content, tuple):
            data, crc, size, kind = (*content, 8)
        else:
            data, crc, size, kind = content, zlib.crc32(content), len(content), 0
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, kind, 0, 0, crc, len(data),
                             size, len(raw), 0) + raw
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, kind, 0, 0, crc,
                                   len(data), size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        local.append(header + data)
        offset += len(header) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(directory), offset, 0)
    return b"".join(local) + directory + end


def deflated_zeros(size, chunk=1 << 20):
    """(raw deflate stream, CRC-32, size) of `size` zero bytes, built from one
    compressed chunk repeated: a full flush makes every chunk's bytes the same."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    block = squeeze.compress(zeros) + squeeze.flush(zlib.Z_FULL_FLUSH)
    again = squeeze.compress(zeros) + squeeze.flush(zlib.Z_FULL_FLUSH)
    assert again == block
    crc = 0
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    return block * (size // chunk) + squeeze.flush(), crc, size


# ---------------------------------------------------------------------- payloads


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """{entry: bytes} of a plain functional tf_keras model (digits: 8x8x1, 10 classes)
    and an HDF5 model whose Lambda bytecode writes the canary given at build time."""
    import tf_keras as keras
    folder = tmp_path_factory.mktemp("plain")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    model.save(str(folder / "model.keras"))
    import zipfile
    with zipfile.ZipFile(folder / "model.keras") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _lambda(function, module, constant, arguments=None):
    """A Lambda layer of type "function" called on a constant input node."""
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "name": "payload", "config": {
                "name": "payload", "trainable": True, "dtype": "float32",
                "function": {"module": module, "class_name": "function", "config": function,
                             "registered_name": "function"},
                "function_type": "function", "module": module, "output_shape": None,
                "output_shape_type": "raw", "output_shape_module": None,
                "arguments": arguments or {}},
            "inbound_nodes": [[["_CONSTANT_VALUE", -1, constant, {}]]]}


def _writes(canary):
    return f"__import__('pathlib').Path({str(canary)!r}).write_text('ran')"


def _config(plain, edit):
    config = json.loads(plain["config.json"])
    edit(config)
    return json.dumps(config).encode()


def _with_config(plain, edit):
    return zip_bytes([("metadata.json", plain["metadata.json"]),
                      ("config.json", _config(plain, edit)),
                      ("model.weights.h5", plain["model.weights.h5"])])


def _add_layer(layer):
    return lambda config: config["config"]["layers"].append(layer)


def _hdf5_lambda_model(path, canary):
    """An HDF5 model whose Lambda bytecode writes `canary` when the model is built."""
    import tf_keras as keras
    action = eval(f"lambda x: ({_writes(canary)}, x)[1]")
    keras.Sequential([keras.layers.Input((3,)), keras.layers.Lambda(action),
                      keras.layers.Dense(2)]).save(str(path))
    os.remove(canary)  # building it ran the lambda once
    return path


def _dense_activation(function_ref):
    def edit(config):
        config["config"]["layers"][-1]["config"]["activation"] = function_ref
    return edit


def _rewire(inbound):
    """The output layer renamed 'rewired', its input the `inbound(name)` nodes."""
    def edit(config):
        layers = config["config"]["layers"]
        layers[-2]["name"] = layers[-2]["config"]["name"] = "flatten_in"
        layers[-1]["name"] = layers[-1]["config"]["name"] = "rewired"
        layers[-1]["inbound_nodes"] = inbound("rewired")
        config["config"]["output_layers"] = [["rewired", 0, 0]]
    return edit


def _module(folder, name):
    """A module `name` in `folder` whose import writes the canary."""
    (folder / f"{name}.py").write_text(
        f"{_writes(folder.parent / 'canary' / 'ran')}\nclass Evil:\n    pass\n")
    return name


# name: (family, builder(plain, folder) -> bytes, the problem in the error line)
# `folder` holds `canary/` (which must stay empty) and the payloads' helper files.
PAYLOADS = {
    "lambda-eval": ("code", lambda p, f: _with_config(p, _add_layer(_lambda(
        "eval", "builtins", _writes(f / "canary" / "ran")))),
        "its config names a Lambda layer (Lambda layers hold code)"),
    "lambda-exec": ("code", lambda p, f: _with_config(p, _add_layer(_lambda(
        "exec", "builtins", _writes(f / "canary" / "ran")))),
        "its config names a Lambda layer (Lambda layers hold code)"),
    "lambda-os-system": ("code", lambda p, f: _with_config(p, _add_layer(_lambda(
        "system", "os", f"touch {f / 'canary' / 'ran'}"))),
        "its config names a Lambda layer (Lambda layers hold code)"),
    "activation-os-system": ("code", lambda p, f: _with_config(p, _dense_activation(
        {"module": "os", "class_name": "function", "config": "system",
         "registered_name": "function"})), "its config names function os.system"),
    "load-model-chain": ("code", lambda p, f: _with_config(p, _add_layer(_lambda(
        "load_model", "keras.models",
        str(_hdf5_lambda_model(f / "inner.h5", f / "canary" / "ran")),
        arguments={"safe_mode": False}))),
        "its config names a Lambda layer (Lambda layers hold code)"),
    "load-model-activation": ("code", lambda p, f: _with_config(p, _dense_activation(
        {"module": "keras.models", "class_name": "function", "config": "load_model",
         "registered_name": "function"})), "its config names function keras.models.load_model"),
    "module-import": ("code", lambda p, f: _with_config(p, lambda config: config.update(
        module=_module(f / "modules", "hostile_canary_module"), class_name="Evil")),
        "its config names class Evil of module hostile_canary_module"),
    "initializer-module": ("code", lambda p, f: _with_config(p, lambda config: config[
        "config"]["layers"][-1]["config"].update(kernel_initializer={
            "module": _module(f / "modules", "hostile_canary_init"), "class_name": "Evil",
            "config": {}, "registered_name": None})),
        "its config names class Evil of module hostile_canary_init"),
    "constant-node": ("code", lambda p, f: _with_config(p, lambda config: config["config"][
        "layers"][-1].update(inbound_nodes=[[["_CONSTANT_VALUE", -1, "x", {}]]])),
        "its config names a constant input node (_CONSTANT_VALUE): inputs come from "
        "layers only"),
    "tfoplambda": ("code", lambda p, f: _with_config(p, _add_layer({
        "module": "keras.layers", "class_name": "TFOpLambda", "registered_name": None,
        "name": "tf.io.write_file", "config": {"name": "tf.io.write_file",
                                               "function": "io.write_file"},
        "inbound_nodes": []})),
        "its config names a TFOpLambda layer (Lambda layers hold code)"),
    "numpy-object": ("code", lambda p, f: _with_config(p, lambda config: config["config"][
        "layers"][-1]["config"].update(kernel_initializer={
            "class_name": "__numpy__", "config": {"value": [1.0], "dtype": "float32"}})),
        "its config names a __numpy__ object (constants and code are not read from "
        "configs)"),
    "activation-by-name": ("code", lambda p, f: _with_config(p, _dense_activation(
        "deserialize")), "its config names activation 'deserialize'"),
    "deep-json": ("code", lambda p, f: _with_config(p, lambda config: config["config"][
        "layers"][-1]["config"].update(deep=json.loads("[" * 150 + "]" * 150))),
        "its config.json is nested over 100 levels"),
    # tf_keras processes nodes until none is left: these would never end.
    "graph-cycle": ("graph", lambda p, f: _with_config(p, _rewire(lambda name: [[[
        name, 0, 0, {}]]])), "layer 'rewired' feeds itself (a cycle in the graph)"),
    "graph-missing-node": ("graph", lambda p, f: _with_config(p, _rewire(lambda name: [[[
        "flatten_in", 5, 0, {}]]])),
        "layer 'rewired' names a layer, node or tensor that does not exist"),
    "hdf5-then-zip": ("polyglot", lambda p, f: (_hdf5_lambda_model(
        f / "inner.h5", f / "canary" / "ran").read_bytes() + _with_config(p, lambda c: None)),
        "it does not begin with a zip entry (an HDF5 or other file: those can run code "
        "when loaded)"),
    "zip-then-hdf5": ("polyglot", lambda p, f: _with_config(p, lambda c: None) + (
        _hdf5_lambda_model(f / "inner.h5", f / "canary" / "ran").read_bytes()),
        "bytes follow its zip end record (a zip comment or appended data)"),
    "zip-slip-dotdot": ("zip-slip", lambda p, f: zip_bytes(
        [*p.items(), ("../canary/ran", b"escaped")]),
        "it holds an entry outside the archive ('../canary/ran')"),
    "zip-slip-absolute": ("zip-slip", lambda p, f: zip_bytes(
        [*p.items(), (str(f / "canary" / "ran"), b"escaped")]),
        "it holds an entry outside the archive ('{F}/canary/ran')"),
    # zipfile (and so tf_keras) reads the last of two entries of one name.
    "duplicate-config": ("zip-slip", lambda p, f: zip_bytes([*p.items(), (
        "config.json", _config(p, _add_layer(_lambda(
            "eval", "builtins", _writes(f / "canary" / "ran")))))]),
        "it holds entry 'config.json' twice"),
    "zip-bomb": ("bomb", lambda p, f: zip_bytes(
        [("metadata.json", p["metadata.json"]), ("config.json", p["config.json"]),
         ("model.weights.h5", BOMB)]),
        f"entry 'model.weights.h5' unpacks {BOMB_BYTES} bytes from {{size}} (over 100 "
        "times: a zip bomb)"),
}
BOMB = None  # built once, by the `payload` fixture


@pytest.fixture
def payload(request, plain, tmp_path):
    """(file bytes, the expected problem, folder of canary/ and helper files)."""
    global BOMB
    name = request.param
    family, build, problem = PAYLOADS[name]
    folder = tmp_path / "outside"
    (folder / "canary").mkdir(parents=True)
    (folder / "modules").mkdir()
    if family == "bomb" and BOMB is None:
        BOMB = deflated_zeros(BOMB_BYTES)
    content = build(plain, folder)
    size = len(BOMB[0]) if family == "bomb" else 0
    problem = problem.replace("{F}", str(folder)).replace("{size}", str(size))
    return content, problem, folder


def _expected(path, problem):
    return f"model file {path} is refused: {problem}; {ALLOWED}"


def _canary_untouched(folder):
    assert os.listdir(folder / "canary") == [], "a payload ran"


@pytest.mark.parametrize("payload", list(PAYLOADS), indirect=True)
def test_loading_refuses_each_payload_in_one_line(payload, monkeypatch):
    content, problem, folder = payload
    monkeypatch.syspath_prepend(str(folder / "modules"))
    path = str(folder / "model.keras")
    with open(path, "wb") as handle:
        handle.write(content)
    for load in (loading.check, loading.check_keras, loading.load_keras):
        with pytest.raises(loading.ModelError) as error:
            load(path)
        assert str(error.value) == _expected(path, problem)
    _canary_untouched(folder)
    assert not [name for name in sys.modules if name.startswith("hostile_canary")]


LIVE = ["lambda-eval", "lambda-exec", "lambda-os-system", "module-import"]


def test_the_code_payloads_are_live(plain, tmp_path, monkeypatch):
    """tf_keras's own load_model (safe_mode on, no gate) runs each code payload: the
    canary checks of the other tests mean something."""
    import tf_keras as keras
    ran = {}
    for name in LIVE:
        folder = tmp_path / name
        (folder / "canary").mkdir(parents=True)
        (folder / "modules").mkdir()
        (folder / "model.keras").write_bytes(PAYLOADS[name][1](plain, folder))
        monkeypatch.syspath_prepend(str(folder / "modules"))
        try:
            keras.models.load_model(str(folder / "model.keras"), compile=False,
                                    safe_mode=True)
        except Exception:  # noqa: BLE001  (the payload ran before the load failed)
            pass
        ran[name] = os.listdir(folder / "canary")
    monkeypatch.delitem(sys.modules, "hostile_canary_module")
    assert ran == {name: ["ran"] for name in LIVE}


# ------------------------------------------------------------------------ stages

STAGE_OPTIONS = {
    PREDICT: {}, QUANTIZE: {"modes": "float16"}, COST: {"repeats": 1, "warmup": 0},
    FEATURES: FEATURES_OPTIONS,
    TRAIN: {"init_from": f"{{W}}/{DENSE0}/model.keras", "seeds": 1, "dataset": "digits"},
    IMPORT: {"models": f"{{W}}/{DENSE0}/model.keras", "method": "imported"},
}


def _hostile_workdir(base, tiny_models, tmp_path, content, stage):
    """A copy of the base workdir whose dense_0_seed0 model file is `content`."""
    def breaker(workdir, _models):
        with open(os.path.join(workdir, DENSE0, "model.keras"), "wb") as handle:
            handle.write(content)
    return _broken_copy(base, tiny_models, tmp_path, breaker, STAGE_OPTIONS[stage])


def _assert_refusal(message, workdir, problem):
    expected = _expected(f"{workdir}/{DENSE0}/model.keras", problem)
    assert message in (expected, "manifest member dense_0_seed0: " + expected), message


@pytest.mark.parametrize("stage", list(STAGE_OPTIONS), ids=lambda s: s.split(".")[-1])
@pytest.mark.parametrize("payload", list(PAYLOADS), indirect=True)
def test_every_stage_refuses_each_payload(base, tiny_models, tmp_path, payload, stage,
                                          monkeypatch):
    content, problem, folder = payload
    monkeypatch.syspath_prepend(str(folder / "modules"))
    workdir, options, before = _hostile_workdir(base, tiny_models, tmp_path, content, stage)
    with pytest.raises(errors.InputError) as raised:
        _stage(stage)(workdir, **options)
    _assert_refusal(str(raised.value), workdir, problem)
    _canary_untouched(folder)
    assert snapshot(str(tmp_path)) == before


# One stage command per payload family: the refusal is the command's one error line.
# (cost and informative-features refuse before TensorFlow loads: a second each.)
COMMANDS = [("lambda-os-system", COST), ("module-import", FEATURES),
            ("hdf5-then-zip", COST), ("zip-slip-dotdot", FEATURES), ("zip-bomb", COST)]


def _run_command(stage, options, pythonpath):
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([ROOT, pythonpath]))
    return subprocess.run([sys.executable, "-m", stage, *_command_line(stage, options)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("payload, stage", [(name, stage) for name, stage in COMMANDS],
                         indirect=["payload"], ids=[name for name, _ in COMMANDS])
def test_a_stage_command_refuses_each_family(base, tiny_models, tmp_path, payload, stage):
    content, problem, folder = payload
    workdir, options, before = _hostile_workdir(base, tiny_models, tmp_path, content, stage)
    result = _run_command(stage, dict(workdir=workdir, **options), str(folder / "modules"))
    lines = problem_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ")
    _assert_refusal(lines[0][len("error: "):], workdir, problem)
    _canary_untouched(folder)
    assert snapshot(str(tmp_path)) == before


# ------------------------------------------------------------------------ Keras 3

_SAVE_KERAS3 = r"""
import sys
import keras
inputs = keras.Input((8, 8, 1))
model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
model.save(sys.argv[1])
print(keras.__version__)
"""


@pytest.fixture(scope="module")
def keras3_file(tmp_path_factory):
    """(bytes, version) of a model saved by Keras 3, as `keras` saves by default with
    TensorFlow 2.21 (a child: `import pie` selects tf_keras for this process)."""
    path = tmp_path_factory.mktemp("keras3") / "model.keras"
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, "-c", _SAVE_KERAS3, str(path)], env=dict(
        env, KERAS_BACKEND="tensorflow"), cwd=str(path.parent), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    version = done.stdout.strip().splitlines()[-1]
    assert version.startswith("3.")
    return path.read_bytes(), version


def _keras3_line(path, version):
    """The documented line: the path, or its name where the path would make the line
    longer than 300 characters (a deep temporary folder)."""
    def line(shown):
        return (f"model file {shown} was saved by Keras 3 ({version}); this toolkit reads "
                "tf_keras 2 files: build the model with tf_keras (import tf_keras as keras) "
                "and save it with model.save('model.keras')")
    return line(path) if len(line(path)) <= 300 else line(os.path.basename(path))


def test_a_keras3_file_is_one_short_line(keras3_file, tmp_path):
    content, version = keras3_file
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    with pytest.raises(loading.ModelError) as error:
        loading.load_keras(str(path))
    assert str(error.value) == _keras3_line(path, version)
    assert len(str(error.value)) <= 300
    deep = tmp_path.joinpath(*["a-long-folder-name-" + "x" * 40] * 4)
    deep.mkdir(parents=True)
    (deep / "model.keras").write_bytes(content)
    with pytest.raises(loading.ModelError) as error:
        loading.check(str(deep / "model.keras"))
    assert str(error.value) == _keras3_line("model.keras", version)  # too long with the path


@pytest.mark.parametrize("stage", [PREDICT, TRAIN, IMPORT], ids=lambda s: s.split(".")[-1])
def test_stages_name_a_keras3_file(base, tiny_models, tmp_path, keras3_file, stage):
    content, version = keras3_file
    workdir, options, before = _hostile_workdir(base, tiny_models, tmp_path, content, stage)
    with pytest.raises(errors.InputError) as raised:
        _stage(stage)(workdir, **options)
    expected = _keras3_line(f"{workdir}/{DENSE0}/model.keras", version)
    assert str(raised.value) in (expected, "manifest member dense_0_seed0: " + expected)
    assert snapshot(str(tmp_path)) == before


def test_the_cost_command_names_a_keras3_file(base, tiny_models, tmp_path, keras3_file):
    content, version = keras3_file
    workdir, options, before = _hostile_workdir(base, tiny_models, tmp_path, content, COST)
    result = _run_command(COST, dict(workdir=workdir, **options), str(tmp_path))
    assert result.returncode == 2 and problem_lines(result) == [
        "error: manifest member dense_0_seed0: "
        + _keras3_line(f"{workdir}/{DENSE0}/model.keras", version)], result.stderr[-2000:]
    assert snapshot(str(tmp_path)) == before


# ------------------------------------------------------- a .tflite that crashes


@pytest.fixture(scope="module")
def crashing_tflite(tmp_path_factory):
    """A well-formed .tflite (it passes the loader's checks) whose input is a constant
    tensor: writing the input writes into the read-only model, a SIGSEGV in LiteRT
    (found by benchmarks/model_fuzz.py)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    import flatbuffers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    schema = loading.tflite_schema()
    parsed = schema.ModelT.InitFromPackedBuf(
        tf.lite.TFLiteConverter.from_keras_model(model).convert(), 0)
    graph = parsed.subgraphs[0]
    # The Flatten's target shape: an int32 constant, made one element long.
    constant = next(index for index, tensor in enumerate(graph.tensors) if tensor.type == 2
                    and parsed.buffers[tensor.buffer].data is not None)
    graph.inputs = np.array([constant], np.int32)
    graph.tensors[constant].shape = np.array([1], np.int32)
    graph.tensors[constant].shapeSignature = None
    buffer = parsed.buffers[graph.tensors[constant].buffer]
    buffer.data = np.array(buffer.data[:4], np.uint8)
    builder = flatbuffers.Builder(1024)
    builder.Finish(parsed.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path_factory.mktemp("crash") / "model.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


def test_a_crashing_tflite_costs_one_line_not_the_process(crashing_tflite):
    import numpy as np
    from pie.models import predict
    path = str(crashing_tflite)
    loading.check(path)  # well-formed: the flatbuffer checks pass
    raw = subprocess.run([sys.executable, "-c",  # the runtime alone, in a child
                          "import sys, numpy as np\n"
                          "from ai_edge_litert.interpreter import Interpreter\n"
                          "i = Interpreter(model_path=sys.argv[1]); i.allocate_tensors()\n"
                          "d = i.get_input_details()[0]\n"
                          "i.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))\n",
                          path], capture_output=True, timeout=120)
    assert raw.returncode == -11  # SIGSEGV
    crashed = f"cannot run TFLite model {path}: the TFLite interpreter crashed on it (SIGSEGV)"
    member = predict.TFLiteMember(path, label="manifest member m")
    with pytest.raises(loading.ModelError) as error:
        member.logits(np.zeros((1,), np.float32), 1)
    assert str(error.value) == "manifest member m: " + crashed
    with pytest.raises(loading.ModelError) as error:  # the probe before in-process use
        loading.load_tflite(path)
    assert str(error.value) == crashed


def _parent_pid(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def test_each_member_is_its_own_child_forked_by_one_zygote(crashing_tflite, tmp_path):
    """Children are forked by the process's zygote, one per member: a crash ends only
    its own child, the next member still runs (outputs as in process), and closing
    the zygote ends and reaps the children left."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from pie.models import predict, tflite_child
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    inputs = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
    tflite_child.close_zygote()
    first = predict.TFLiteMember(str(plain))
    crashing = predict.TFLiteMember(str(crashing_tflite), label="manifest member m")
    zygote = tflite_child.zygote()._process.pid
    pids = [first.interpreter._process.pid, crashing.interpreter._process.pid]
    assert len(set(pids + [zygote, os.getpid()])) == 4
    assert [_parent_pid(pid) for pid in pids] == [zygote, zygote]
    with pytest.raises(loading.ModelError) as error:
        crashing.logits(np.zeros((1,), np.float32), 1)
    assert str(error.value).endswith("the TFLite interpreter crashed on it (SIGSEGV)")
    after = predict.TFLiteMember(str(plain))
    assert tflite_child.zygote()._process.pid == zygote  # the crash was the child's only
    expected = tflite_child.InProcessMember(str(plain)).logits(inputs, 2)
    np.testing.assert_array_equal(first.logits(inputs, 2), expected)
    np.testing.assert_array_equal(after.logits(inputs, 2), expected)
    left = [first.interpreter._process.pid, after.interpreter._process.pid]
    tflite_child.close_zygote()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in left + [zygote])


def test_the_cost_command_names_a_crashing_tflite_member(base, tiny_models, tmp_path,
                                                         crashing_tflite):
    """cost times members in its own process, after a child survived the same run."""
    from test_bad_input import edit_manifest

    def breaker(workdir, models):  # the first member measured: before TensorFlow loads
        with open(os.path.join(workdir, DENSE0, "model.tflite"), "wb") as handle:
            handle.write(crashing_tflite.read_bytes())
        edit_manifest("dense_0_seed0", model_file=f"{DENSE0}/model.tflite")(workdir, models)

    workdir, options, before = _broken_copy(base, tiny_models, tmp_path, breaker,
                                            STAGE_OPTIONS[COST])
    result = _run_command(COST, dict(workdir=workdir, **options), str(tmp_path))
    assert result.returncode == 2 and problem_lines(result) == [
        f"error: manifest member dense_0_seed0: cannot run TFLite model {workdir}/{DENSE0}/"
        "model.tflite: the TFLite interpreter crashed on it (SIGSEGV)"], result.stderr[-2000:]
    assert snapshot(str(tmp_path)) == before
