"""Checks of a model trained elsewhere (--init_from, save_checkpoint.import_members).

A model made outside the toolkit must take the inputs the dataset's family gives
(docs/contracts.md, "What a member receives") and give one output per class. Its
shapes are checked before anything is written (one error line naming both
shapes); its top-1 on a few eval images is then compared with chance, since a
model fed the wrong preprocessing usually still runs, but guesses.
"""
import math
import os
import re
import sys
import warnings

import numpy as np

from pie.io import errors

# What a member receives, per data family (pie.data.sources.DataSource.normalize).
FAMILY_INPUTS = {
    "small": "HxWxC float32 in [0, 1] (uint8 / 255), no mean or std",
    "cifar": "32x32x3 RGB float32, (uint8 / 255 - mean) / std per channel with "
             "mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)",
    "imagenet": "224x224x3 RGB float32 (short side resized to 256, centre crop 224), "
                "(uint8 / 255 - mean) / std with mean (0.485, 0.456, 0.406), "
                "std (0.229, 0.224, 0.225)",
    "toy": "2 float32 coordinates, as generated",
}
CHECK_IMAGES = 256  # eval images of the chance check
# Top-1 within this many binomial standard errors of chance counts as chance.
CHANCE_SIGMAS = 2.0
# A declared --sparsity this far from the measured one draws a warning.
DECLARED_SPARSITY_TOLERANCE = 0.02


def model_label(prefix, path):
    """The manifest's `model` of a model file made elsewhere: `<prefix>-<file name>`,
    other characters than letters, digits and '._-' replaced by '_' (a manifest rule).
    A per-seed pattern's `{seed}` is left out (`net_seed{seed}.keras`: `net_seed.keras`),
    so every seed's member has the same label."""
    from pie.compress import lineage
    name = os.path.basename(path)
    if lineage.SEED_FIELD in name:
        stem, dot, extension = name.replace(lineage.SEED_FIELD, "").rpartition(".")
        name = (stem or "seeds") + dot + extension if dot else (extension or "seeds")
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(int(d)) for d in shape) + ")"


def check_shapes(path, input_shape, n_outputs, source):
    """Raises ContractError unless the model's input shape (without the batch axis)
    and output width match the dataset; None dimensions of the model match any."""
    want = tuple(int(d) for d in source.input_shape)
    have = tuple(None if d is None else int(d) for d in input_shape)
    fits = len(have) == len(want) and all(h is None or h == w for h, w in zip(have, want))
    if not fits or n_outputs != source.num_classes:
        raise errors.ContractError(
            f"model {path} takes inputs {_shape_text(have)} and gives {n_outputs} outputs; "
            f"dataset '{source.name}' has inputs {_shape_text(want)} and "
            f"{source.num_classes} classes")


def keras_signature(model, path):
    """(input shape without batch, output width) of a single-input, single-output model."""
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise errors.ContractError(
            f"model {path} has {len(inputs)} inputs and {len(outputs)} outputs: a member "
            "takes one image batch and gives one row of class scores per image")
    output = tuple(outputs[0].shape)
    if len(output) != 2 or output[1] is None:
        raise errors.ContractError(
            f"model {path} gives outputs of shape {_shape_text(output)}: a member gives "
            "(batch, classes)")
    return tuple(inputs[0].shape)[1:], int(output[1])


def load_keras(path):
    """pie.models.loading.load_keras without the library's warnings about what it refuses
    (a refused Lambda layer is one error line, not a warning and an error)."""
    from pie.models import loading
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return loading.load_keras(path)


def keras_member(path):
    """A runnable Keras member (pie.models.predict.KerasMember), loaded as load_keras."""
    from pie.models import predict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return predict.KerasMember(path)


def tflite_signature(interpreter, path):
    """(input shape without batch, output width) of a single-input, single-output
    TFLite model; -1 (a dynamic dimension) matches any size."""
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise errors.ContractError(
            f"model {path} has {len(inputs)} inputs and {len(outputs)} outputs: a member "
            "takes one image batch and gives one row of class scores per image")
    signature = inputs[0].get("shape_signature", inputs[0]["shape"])
    output = list(outputs[0]["shape"])
    if len(output) != 2:
        raise errors.ContractError(f"model {path} gives outputs of shape {tuple(output)}: a "
                                   "member gives (batch, classes)")
    return tuple(None if int(d) < 0 else int(d) for d in signature[1:]), int(output[1])


def keras_sparsity(model):
    """Share of exact zeros over the prunable kernels (as save_checkpoint.train measures),
    the kernels of nested models (a backbone inside a wrapper) included."""
    from pie.compress import pruning
    return pruning.kernel_sparsity(model, pruning.prunable_layer_names(model))[1]


# TFLite operators whose input 1 is a weight kernel, and the dequantize operator that
# feeds float16 weights to them.
KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
                 9: np.int8}


def tflite_sparsity(path):
    """Share of zeros over the constant kernels of a .tflite file's conv and dense
    operators (a quantized weight counts as zero when it stores its zero point);
    NaN when a kernel is stored sparse-encoded or in another type, or when the
    file's operators are not laid out as a converter writes them (a hostile file
    that passed pie.models.loading's index checks)."""
    try:
        return _tflite_sparsity(path)
    except (TypeError, ValueError, IndexError, AttributeError, KeyError):
        return float("nan")


def _tflite_sparsity(path):
    from pie.models import loading
    schema = loading.tflite_schema()
    with open(path, "rb") as handle:
        model = schema.ModelT.InitFromPackedBuf(handle.read(), 0)
    names = {getattr(schema.BuiltinOperator, name): name for name in KERNEL_OPS + ("DEQUANTIZE",)}
    codes = [names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
             for code in model.operatorCodes]
    graph = model.subgraphs[0]
    producer = {int(out): op for op in graph.operators for out in (op.outputs or [])}
    zeros = total = 0
    for op in graph.operators:
        if codes[op.opcodeIndex] not in KERNEL_OPS or len(op.inputs) < 2:
            continue
        index = int(op.inputs[1])
        feeding = producer.get(index)
        if feeding is not None and codes[feeding.opcodeIndex] == "DEQUANTIZE":
            index = int(feeding.inputs[0])
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data
        if data is None or tensor.sparsity is not None or tensor.type not in TENSOR_DTYPES:
            return float("nan")
        values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), TENSOR_DTYPES[tensor.type])
        zero = 0
        if tensor.quantization is not None and tensor.quantization.zeroPoint is not None \
                and len(tensor.quantization.zeroPoint) == 1:
            zero = int(tensor.quantization.zeroPoint[0])
        zeros += int(np.count_nonzero(values == zero))
        total += values.size
    return zeros / total if total else 0.0


def few_eval_images(source, count=CHECK_IMAGES):
    """(model inputs, labels) of the first `count` eval images."""
    batch = next(iter(source.eval_batches(count).as_numpy_iterator()))
    return batch["inputs"], np.asarray(batch["label"]).reshape(-1)


def chance_level(labels):
    """Top-1 of always answering the most frequent class of `labels`."""
    return float(np.bincount(labels).max() / len(labels))


def warn_if_chance(path, scores, labels, source, out=None):
    """Prints one warning line when `scores` (images x classes) are no better than
    chance on these eval images; returns the top-1."""
    top1 = float(np.mean(np.argmax(scores, axis=1) == labels))
    chance = chance_level(labels)
    margin = CHANCE_SIGMAS * math.sqrt(chance * (1 - chance) / len(labels))
    if top1 <= chance + margin:
        expected = FAMILY_INPUTS.get(source.family, "see docs/contracts.md")
        print(f"warning: model {path} scores {100 * top1:.1f}% top-1 on {len(labels)} eval "
              f"images of '{source.name}', chance level {100 * chance:.1f}%: check that it "
              f"expects what the '{source.family}' family gives ({expected}; "
              "docs/contracts.md)", file=out or sys.stderr, flush=True)
    return top1


def at_chance(scores, labels):
    """(top-1, chance level, whether top-1 is within CHANCE_SIGMAS of chance)."""
    top1 = float(np.mean(np.argmax(scores, axis=1) == labels))
    chance = chance_level(labels)
    margin = CHANCE_SIGMAS * math.sqrt(chance * (1 - chance) / len(labels))
    return top1, chance, top1 <= chance + margin


def check_chance(path, scores, labels, source, allow_chance=False, out=None):
    """A model at chance on a few eval images (usually: another input convention than
    the family's) stops the run with one ContractError naming the convention; with
    `allow_chance` it is the warning line of warn_if_chance. Returns the top-1."""
    top1, chance, guesses = at_chance(scores, labels)
    if guesses and not allow_chance:
        expected = FAMILY_INPUTS.get(source.family, "see docs/contracts.md")
        raise errors.ContractError(
            f"model {path} scores {100 * top1:.1f}% top-1 on {len(labels)} eval images of "
            f"'{source.name}', chance level {100 * chance:.1f}%: the '{source.family}' family "
            f"gives {expected} (docs/contracts.md); --allow_chance to go on")
    return warn_if_chance(path, scores, labels, source, out=out)


def check_declared_sparsity(path, declared, measured, out=None):
    """One warning line when a model's measured sparsity is more than
    DECLARED_SPARSITY_TOLERANCE from the declared --sparsity (NaN: not measurable)."""
    if math.isnan(measured) or abs(measured - declared) <= DECLARED_SPARSITY_TOLERANCE:
        return False
    print(f"warning: model {path} is declared --sparsity={declared:g} but {measured:.4f} of "
          f"its prunable kernels are zeros (more than {DECLARED_SPARSITY_TOLERANCE:g} apart)",
          file=out or sys.stderr, flush=True)
    return True


def check_member(path, member, source, declared, measured, allow_chance, batch_size):
    """import-members' checks of a loaded member (pie.models.predict) before anything
    is written: check_chance on a few eval images, then check_declared_sparsity."""
    inputs, labels = few_eval_images(source)
    check_chance(path, member.logits(inputs, batch_size), labels, source, allow_chance)
    check_declared_sparsity(path, declared, measured)
