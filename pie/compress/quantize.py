"""TFLite conversion of population members, and what a converted model costs.

Conversion modes form a registry keyed by name (`MODES`). Each mode says which
members it converts (the dense population, or the pruned members), the manifest
method of its results, and how the TFLite converter is configured:

  float16       dense   float16 weights (`Optimize.DEFAULT` + float16 supported type)
  dynamic_int8  dense   dynamic-range int8: int8 weights, float activations
  full_int8     dense   full-integer int8, activations calibrated on a representative
                        set of training images; int8 input and output tensors
  sparse        pruned  float weights in TFLite's sparse storage (EXPERIMENTAL_SPARSITY)
  pruned_int8   pruned  full-integer int8 with sparse storage

`convert` takes a loaded tf_keras model. The Keras path
(`TFLiteConverter.from_keras_model`) is tried first; when it fails the model is
traced into a concrete function and converted from that, so a Keras 2 model the
Keras path rejects still converts.

`Latency` times a .tflite model with the LiteRT interpreter (XNNPACK on).
"""
import collections
import contextlib
import gzip
import sys
import time

import numpy as np
from absl import logging

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import cli, records
from pie.models import loading

QUANT_PREFIX = records.QUANTIZED_PREFIX
DENSE_SOURCE = "dense"
PRUNED_SOURCE = "pruned"
# `frozen` first: the traced function with its variables frozen into constants. The
# other two export the model as a SavedModel first (tf_keras serializes every layer's
# functions: about 90% of a conversion's CPU time, for the same TFLite graph).
CONVERTER_PATHS = ("frozen", "keras", "concrete_function")

# Images run at once when measuring a converted model's top-1.
EVAL_BATCH_SIZE = 256

Mode = collections.namedtuple("Mode", ["name", "source", "sparse", "weights", "full_int8"])
Mode.__doc__ = """One conversion mode.

  source: `dense` (converts the dense population) or `pruned` (pruned members)
  sparse: store weights with TFLite's sparse encoding (EXPERIMENTAL_SPARSITY)
  weights: `float32`, `float16` or `int8` (the stored weight type)
  full_int8: integer-only model calibrated on representative images
"""

MODES = collections.OrderedDict((mode.name, mode) for mode in (
    Mode("float16", DENSE_SOURCE, sparse=False, weights="float16", full_int8=False),
    Mode("dynamic_int8", DENSE_SOURCE, sparse=False, weights="int8", full_int8=False),
    Mode("full_int8", DENSE_SOURCE, sparse=False, weights="int8", full_int8=True),
    Mode("sparse", PRUNED_SOURCE, sparse=True, weights="float32", full_int8=False),
    Mode("pruned_int8", PRUNED_SOURCE, sparse=True, weights="int8", full_int8=True),
))
# Not a member-producing mode: the plain float conversion used to time Keras members.
FLOAT_MODE = Mode("float32", DENSE_SOURCE, sparse=False, weights="float32", full_int8=False)


class QuantizeError(cli.UsageError):
    """A conversion that cannot be done as asked (bad input: exit 2 in a stage)."""


def mode_method(mode_name):
    """The manifest method of a mode's members, e.g. `quant_full_int8`."""
    get_mode(mode_name)
    return QUANT_PREFIX + mode_name


def get_mode(name):
    if name not in MODES:
        raise QuantizeError(f"unknown quantization mode '{name}'; allowed: "
                            f"{', '.join(MODES)}")
    return MODES[name]


def is_quantized_method(method):
    return str(method).startswith(QUANT_PREFIX)


# ----------------------------------------------------------------------- conversion


def _converter(model, path):
    import tensorflow as tf
    if path == "keras":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    # Traced with a free batch dimension, so the interpreter can batch the images.
    spec = tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32)
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if path == "frozen":  # no SavedModel export: the variables frozen in the graph
        converter.experimental_lower_to_saved_model = False
    return converter


def _configure(converter, mode, representative):
    import tensorflow as tf
    optimizations = []
    if mode.weights != "float32" or mode.full_int8:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if mode.sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode.weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode.full_int8:
        if representative is None or len(representative) == 0:
            raise QuantizeError(
                f"mode {mode.name} needs representative images to calibrate activations")
        images = np.asarray(representative, np.float32)

        def representative_dataset():
            for index in range(len(images)):
                yield [images[index:index + 1]]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


@contextlib.contextmanager
def _keras3_check_cut(model):
    """The converter's Keras path asks whether the model is a Keras 3 one by importing
    all of Keras 3 (about 1.5 s of CPU in every stage that converts); a tf_keras model
    is not one whatever Keras 3 says, so while one converts, `keras` is marked absent
    (the check's ImportError answers the same False), unless it is loaded already."""
    import tf_keras
    if "keras" in sys.modules or not isinstance(model, tf_keras.layers.Layer):
        yield
        return
    sys.modules["keras"] = None
    try:
        yield
    finally:
        if "keras" in sys.modules and sys.modules["keras"] is None:
            del sys.modules["keras"]


def convert(model, mode, representative=None, path=None):
    """The .tflite bytes of a tf_keras model converted in `mode` (a name or Mode).

    Args:
      model: a loaded tf_keras model (float inputs, logits out).
      mode: a name from MODES, or a Mode (e.g. FLOAT_MODE).
      representative: full-integer modes: model inputs (n, ...) used to calibrate
        the activation ranges.
      path: `frozen`, `keras` or `concrete_function`; None tries them in that order,
        each when the ones before it fail.
    """
    mode = get_mode(mode) if isinstance(mode, str) else mode
    if path is not None and path not in CONVERTER_PATHS:
        raise QuantizeError(f"unknown converter path '{path}'; allowed: "
                            f"{', '.join(CONVERTER_PATHS)}")
    paths = [path] if path else list(CONVERTER_PATHS)
    for attempt, name in enumerate(paths):
        converter = _converter(model, name)
        _configure(converter, mode, representative)
        try:
            with _keras3_check_cut(model):
                return converter.convert()
        except Exception as error:  # the converter raises assorted internal error types
            if attempt == len(paths) - 1:
                raise
            logging.warning("TFLite conversion from the Keras model failed (%s); "
                            "converting a traced concrete function instead",
                            str(error).splitlines()[0] if str(error) else type(error).__name__)
    raise AssertionError("unreachable")


def representative_inputs(source, n_images, seed):
    """`n_images` model inputs drawn from the TRAINING split, reproducible from `seed`.

    Training images, never eval ones: calibrating on the images a model is scored
    on would leak them into the quantized model.
    """
    if n_images < 1:
        raise QuantizeError(f"representative images must be at least 1, got {n_images}")
    import tensorflow as tf
    size = source.train_size or 10000
    # A bounded buffer: drawing 200 of ImageNet's images needs no 50,000-image buffer.
    buffer = int(min(size, max(10 * n_images, 1000)))
    dataset = source.train_raw().shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    batch = next(iter(dataset.take(n_images).batch(n_images)), None)
    if batch is None:
        raise QuantizeError("the training split is empty: no representative images")
    return np.asarray(source.normalize(batch["image"]), np.float32)


def eval_top1(member, source, batch_size=EVAL_BATCH_SIZE):
    """Top-1 of a runnable member (pie.models.predict) on the eval split."""
    correct = total = 0
    for batch in source.eval_batches(batch_size).as_numpy_iterator():
        logits = member.logits(batch["inputs"], batch_size)
        correct += int(np.sum(logits.argmax(axis=1) == batch["label"]))
        total += len(batch["label"])
    if total == 0:
        raise QuantizeError("the eval split is empty")
    return correct / total


# ----------------------------------------------------------------------------- cost


def parameter_counts(model):
    """(parameters, non-zero parameters) over every weight of a Keras model."""
    weights = model.get_weights()
    total = sum(int(w.size) for w in weights)
    nonzero = sum(int(np.count_nonzero(w)) for w in weights)
    return total, nonzero


# deflate's default level, which gzip and tfmot's pruning guide measure with. Level 9
# spends its time on long searches through runs of zeros: on a ResNet-50 member with half
# of each kernel zero (95 MB) it compressed 2.7 MB/s against 16.5 at level 6, for a file
# 0.8% smaller (benchmarks/member_file_io.py).
GZIP_LEVEL = 6


def file_sizes(path):
    """(bytes, gzip bytes at GZIP_LEVEL) of a file."""
    with open(path, "rb") as handle:
        content = handle.read()
    return len(content), len(gzip.compress(content, compresslevel=GZIP_LEVEL, mtime=0))


class Latency:
    """Median wall time of one interpreter invocation at a given batch size.

    The interpreter (pie.models.loading: LiteRT) uses the AUTO op resolver, which
    applies the XNNPACK delegate by default (TFLite's CPU fast path). Inputs are random values of the
    model's input type; the timed loop runs only `invoke`.
    """

    def __init__(self, path, num_threads=1):
        self.path, self.num_threads = path, num_threads
        self.interpreter = loading.load_tflite(path, num_threads=num_threads)

    def _inputs(self, detail, batch_size, seed):
        rng = np.random.default_rng(seed)
        shape = [batch_size] + [int(d) for d in detail["shape_signature"][1:]]
        if any(d < 1 for d in shape[1:]):
            raise QuantizeError(f"{self.path}: input shape {shape} is not fixed; "
                                "latency needs fixed image sizes")
        if np.issubdtype(detail["dtype"], np.integer):
            info = np.iinfo(detail["dtype"])
            return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(
                detail["dtype"])
        return rng.standard_normal(shape).astype(detail["dtype"])

    def median_ms(self, batch_size, repeats, warmup=2, seed=0):
        """Median milliseconds of one invoke on a batch of `batch_size` images."""
        if repeats < 1:
            raise QuantizeError(f"repeats must be at least 1, got {repeats}")
        detail = self.interpreter.get_input_details()[0]
        inputs = self._inputs(detail, batch_size, seed)
        self.interpreter = loading.resize_input(self.interpreter, self.path,
                                                list(inputs.shape), self.num_threads)
        self.interpreter.set_tensor(self.interpreter.get_input_details()[0]["index"], inputs)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = np.empty(repeats)
        for repeat in range(repeats):
            start = time.perf_counter()
            self.interpreter.invoke()
            times[repeat] = time.perf_counter() - start
        return float(np.median(times) * 1000.0)


def reusable_cost_rows(previous, file_bytes, repeats, num_threads, columns):
    """Cost rows (by member_id) a rerun keeps: same model file size, repeats, threads
    and gzip level.

    Args:
      previous: the previous cost table (a DataFrame).
      file_bytes: {member_id: current size of its model file} for current members;
        rows of members no longer in the manifest are dropped.
      columns: the columns a row must have to be kept (an older table is remeasured).
    """
    if any(column not in previous.columns for column in columns):
        return {}
    keep = previous[previous["member_id"].map(file_bytes).eq(previous["file_bytes"])
                    & previous["repeats"].eq(repeats)
                    & previous["num_threads"].eq(num_threads)
                    & previous["gzip_level"].eq(GZIP_LEVEL)]
    return {row["member_id"]: row for row in keep.to_dict("records")}


def member_id(method, sparsity, seed):
    return f"{records.variant_key(method, sparsity)}_seed{int(seed)}"
