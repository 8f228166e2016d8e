"""The one way a stage opens a model file from a workdir, which is untrusted input.

A model file may come from anywhere (a shared or downloaded workdir): it is data.
Nothing in it may run code, reach outside its folder, exhaust memory or crash the
process (docs/contracts.md, "Model files are data"):

  .keras   read first as data by pie.models.keras_gate (the zip's entries, layout
           and bounds; every class, function and name its config.json refers to
           on an allowlist; no Lambda, no constant input node); only then loaded
           as `load_model(safe_mode=True, compile=False)` does. A Keras 3 file gets one
           line saying how to save it with tf_keras.
  .tflite  checked before an interpreter sees it: the TFLite magic, then the whole
           flatbuffer parsed in Python (a truncated or corrupt file fails there, as
           an exception, not a SIGSEGV) with every index and buffer range checked.
           Then it runs in a child process (pie.models.tflite_child): a member's
           whole interpretation, or a probe before an in-process interpreter, so a
           native crash of the runtime costs one error line, not the stage.
  other    refused.

Every failure is a `ModelError`: one `error:` line and exit 2 in a stage.
"""
import functools
import os
import sys

from pie.io import errors
from pie.models import keras_gate

KERAS_SUFFIX = ".keras"
TFLITE_SUFFIX = ".tflite"
TFLITE_MAGIC = b"TFL3"  # the flatbuffer file identifier, bytes 4..8


class ModelError(errors.ModelError):
    """A model file that cannot be opened safely."""


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _check_file(path):
    if not os.path.lexists(path):
        raise ModelError(f"model file missing at {path}")
    if os.path.islink(path) or not os.path.isfile(path):
        raise ModelError(f"model file {path} is not a regular file (links are not followed)")


# --------------------------------------------------------------------------- keras


def _keras3_message(path, version):
    """One line of at most 300 characters (a long path is shown by its name)."""
    for shown in (path, os.path.basename(path)):
        line = (f"model file {shown} was saved by Keras 3 ({version}); this toolkit reads "
                "tf_keras 2 files: build the model with tf_keras (import tf_keras as keras) "
                "and save it with model.save('model.keras')")
        if len(line) <= 300:
            return line
    return line[:300]


def check_keras(path):
    """Raises ModelError unless `path` is a `.keras` file that passes the gate
    (pie.models.keras_gate: the zip, its bounds, its config's allowlist)."""
    _check_file(path)
    if not path.endswith(KERAS_SUFFIX):
        raise ModelError(f"model file {path} is neither {KERAS_SUFFIX} nor {TFLITE_SUFFIX}")
    try:
        keras_gate.check(path)
    except keras_gate.Keras3Error as error:
        raise ModelError(_keras3_message(path, str(error)))
    except keras_gate.GateError as error:
        raise ModelError(f"model file {path} is refused: {error}; {keras_gate.ALLOWED_TEXT}")
    except OSError as error:
        raise ModelError(f"model file {path} cannot be read ({error.strerror or error})")


def load_keras(path):
    """The tf_keras model of a `.keras` file that passed the gate, loaded uncompiled
    with safe_mode on (tf_keras extracts nothing: the gate allows no assets)."""
    check_keras(path)
    try:
        return _load_gated_keras(path)
    except Exception as error:  # any failure of an untrusted file is bad input
        raise ModelError(f"cannot load model {path}: {_first_line(error)}")


def _load_gated_keras(path):
    """What tf_keras's `load_model(path, compile=False, safe_mode=True)` does (the same
    calls of its saving_lib, at the pinned version), with the weights read once into
    memory. tf_keras hands h5py the zip entry itself, and Python 3.11's zip entry
    rewinds and reads from the entry's start for every backward seek h5py makes:
    loading a ResNet-50 member (95 MB, 1,900 seeks) took 14 CPU seconds, most of
    them rereading. The gate has bounded every entry's size."""
    import io
    import json
    import zipfile
    import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from tf_keras.src.saving import saving_lib, serialization_lib
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        config = json.loads(archive.read("config.json"))
        weights = io.BytesIO(archive.read("model.weights.h5"))
    config["compile_config"] = None  # loaded uncompiled
    enabled = getattr(saving_lib._SAVING_V3_ENABLED, "value", False)
    saving_lib._SAVING_V3_ENABLED.value = True
    try:
        with serialization_lib.ObjectSharingScope():
            model = serialization_lib.deserialize_keras_object(config, None,
                                                               safe_mode=True)
        store = saving_lib.H5IOStore(weights, mode="r")  # h5py reads a file object
        try:
            saving_lib._load_state(model, weights_store=store, assets_store=None,
                                   inner_path="", visited_trackables=set())
        finally:
            store.close()
    finally:
        saving_lib._SAVING_V3_ENABLED.value = enabled
    return model


# -------------------------------------------------------------------------- tflite


@functools.lru_cache(maxsize=None)
def interpreter_class():
    """LiteRT's Interpreter; TensorFlow's deprecated tf.lite one only where it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        return tf.lite.Interpreter
    return Interpreter


def uses_litert():
    return interpreter_class().__module__.startswith("ai_edge_litert")


@functools.lru_cache(maxsize=None)
def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def tflite_schema():
    """The TFLite flatbuffer schema module (LiteRT's, else TensorFlow's), for readers
    of a checked model's tensors (pie.models.imported)."""
    return _schema()


def _check_indices(model, size):
    """Every index the interpreter follows lies inside its table; buffers in the file."""
    n_buffers, n_codes = len(model.buffers or []), len(model.operatorCodes or [])
    if not model.subgraphs:
        return "it has no subgraph"
    for buffer in model.buffers or []:
        if buffer.offset and (buffer.offset + buffer.size > size or buffer.offset < 0):
            return "a buffer lies outside the file"
    for subgraph in model.subgraphs:
        tensors = subgraph.tensors or []
        for tensor in tensors:
            if not 0 <= tensor.buffer < max(n_buffers, 1):
                return f"tensor {tensor.name!r} names buffer {tensor.buffer} of {n_buffers}"
        names = list(subgraph.inputs if subgraph.inputs is not None else [])
        names += list(subgraph.outputs if subgraph.outputs is not None else [])
        for operator in subgraph.operators or []:
            if not 0 <= operator.opcodeIndex < n_codes:
                return f"an operator names opcode {operator.opcodeIndex} of {n_codes}"
            names += list(operator.inputs if operator.inputs is not None else [])
            names += list(operator.outputs if operator.outputs is not None else [])
        # -1 marks an optional input that is absent.
        if any(not -1 <= int(index) < len(tensors) for index in names):
            return "an operator or subgraph names a tensor that does not exist"
    return None


def check_tflite(path):
    """Raises ModelError unless `path` is a TFLite flatbuffer whose structure is whole."""
    _check_file(path)
    if not path.endswith(TFLITE_SUFFIX):
        raise ModelError(f"model file {path} is neither {KERAS_SUFFIX} nor {TFLITE_SUFFIX}")
    with open(path, "rb") as handle:
        content = handle.read()
    if len(content) < 8 or content[4:8] != TFLITE_MAGIC:
        raise ModelError(f"model file {path} is not a TFLite flatbuffer (no TFL3 identifier)")
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(content, 0)
        problem = _check_indices(model, len(content))
    except Exception as error:  # struct.error, IndexError, ...: a broken flatbuffer
        raise ModelError(f"model file {path} is a truncated or corrupt TFLite flatbuffer "
                         f"({_first_line(error)})")
    if problem:
        raise ModelError(f"model file {path} is a corrupt TFLite flatbuffer: {problem}")


def open_tflite(path, num_threads=None, delegates=True):
    """An interpreter of a checked `.tflite` file in this process, unprobed: for the
    child processes of pie.models.tflite_child, where a crash is contained.

    With `delegates`, the AUTO op resolver, which applies XNNPACK on CPU; without,
    TFLite's own kernels only (see `resize_input`).
    """
    check_tflite(path)
    cls = interpreter_class()
    resolvers = sys.modules[cls.__module__].OpResolverType
    resolver = resolvers.AUTO if delegates else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return cls(model_path=path, num_threads=num_threads,
                   experimental_op_resolver_type=resolver)
    except Exception as error:  # noqa: BLE001  (an untrusted file: every failure is its)
        raise ModelError(f"cannot open TFLite model {path}: {_first_line(error)}")


def load_tflite(path, num_threads=None, delegates=True):
    """An interpreter of a `.tflite` file in this process, opened only after a child
    process ran the model on the probe inputs (pie.models.tflite_child.probe:
    batch 1 and 32, zeros and the cost stage's inputs) without crashing.

    Stages that run a member on images use pie.models.predict.TFLiteMember, which
    runs the whole interpretation in a child instead.
    """
    check_tflite(path)
    from pie.models import tflite_child
    try:
        tflite_child.probe(path, num_threads)
    except tflite_child.ChildError as error:
        raise ModelError(f"cannot run TFLite model {path}: {error}")
    return open_tflite(path, num_threads, delegates)


def resize_input(interpreter, path, shape, num_threads=None, opener=None):
    """Resizes input 0 to `shape` and allocates; returns the interpreter to use.

    LiteRT's XNNPACK cannot prepare some models TFLite's own kernels run (int8
    fully-connected layers with sparse weights): such a model is opened again
    without the delegate (by `opener`, load_tflite by default), and that
    interpreter is returned.
    """
    opener = opener or load_tflite
    for attempt in ("delegated", "plain"):
        try:
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], shape)
            interpreter.allocate_tensors()
            return interpreter
        except Exception as error:  # noqa: BLE001  (the model's failure, not ours)
            if attempt == "plain" or "delegate" not in str(error).lower():
                raise ModelError(f"cannot run TFLite model {path}: {_first_line(error)}")
        interpreter = opener(path, num_threads, delegates=False)


# --------------------------------------------------------------------------- any


def kind(path):
    """'keras' or 'tflite' by the file's suffix; anything else is refused."""
    if path.endswith(KERAS_SUFFIX):
        return "keras"
    if path.endswith(TFLITE_SUFFIX):
        return "tflite"
    raise ModelError(f"model file {path} is neither {KERAS_SUFFIX} nor {TFLITE_SUFFIX}: "
                     "no other format is loaded")


def check(path):
    """Checks a model file of either kind without building it (cheap; no TensorFlow)."""
    (check_keras if kind(path) == "keras" else check_tflite)(path)
