"""Running population members over images: Keras and TFLite members alike.

Every stage that needs model outputs (predictions, corruptions, quantization cost)
goes through `load_member` and `predict_frame`, so a member is run the same way,
batched, whatever its format.
"""
import concurrent.futures
import os
import time

import numpy as np
import pandas as pd

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors, records
from pie.io.workdir import Workdir
from pie.models import loading, tflite_child

TOP_K = 5
# A TFLite member's interpreter threads in the stages that run members over images:
# every core, as TensorFlow gives a Keras member. The logits are bit-identical at any
# count (tests/test_quantization.py); at one thread the quantized members took 75% of
# the corruption stage's prediction time (docs/benchmarks.md). The cost stage times its
# own.
TFLITE_THREADS = os.cpu_count() or 1


class KerasMember:
    """A saved Keras model; `logits(inputs)` runs it in batches of `batch_size`, as
    model.predict would, through one compiled forward pass per member.

    model.predict builds a tf.data pipeline and runs callbacks per call: on 18,000
    MNIST images it took 1.49 s against 0.96 s for the same batches through a
    tf.function (docs/benchmarks.md, "Predictions"); the logits are bit-identical
    (the same graph on the same batches; tests/test_predictions.py).
    """

    def __init__(self, path, label=None):
        self.path, self.label = path, label
        self.model = loading.load_keras(path)
        self._forward = None  # a tf.function, its batch dimension left open

    def check_input(self, sample_shape):
        """Fails with one line naming the member when the model does not take one input
        of the data's per-image shape `sample_shape` (an imported model of other data)."""
        prefix = f"{self.label}: " if self.label else ""
        inputs = self.model.inputs or []
        if len(inputs) != 1:
            raise loading.ModelError(f"{prefix}model {self.path} has {len(inputs)} inputs: a "
                                     "member takes one input, the image")
        wanted = tuple(inputs[0].shape)[1:]
        given = tuple(int(size) for size in sample_shape)
        if len(wanted) != len(given) or any(
                size is not None and size != have for size, have in zip(wanted, given)):
            shown = "x".join("?" if size is None else str(size) for size in wanted)
            raise loading.ModelError(
                f"{prefix}model {self.path} takes inputs of shape {shown}, the data's images "
                f"are {'x'.join(map(str, given))}")

    def forward(self):
        """The model in inference mode (training=False, as model.predict calls it),
        traced once for any batch size."""
        import tensorflow as tf
        if self._forward is None:
            spec = tf.TensorSpec([None] + list(self.model.inputs[0].shape[1:]),
                                 self.model.inputs[0].dtype)
            model = self.model
            self._forward = tf.function(lambda batch: model(batch, training=False),
                                        input_signature=[spec])
        return self._forward

    def logits(self, inputs, batch_size):
        import tensorflow as tf
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.check_input(np.shape(inputs)[1:])
        try:
            # In the input's dtype, as the model casts what model.predict gives it.
            inputs = np.asarray(inputs).astype(self.model.inputs[0].dtype.as_numpy_dtype,
                                               copy=False)
            if not len(inputs):  # a convolution refuses an empty batch
                return np.zeros((0, int(self.model.outputs[0].shape[-1])), np.float32)
            forward = self.forward()
            parts = [np.asarray(forward(inputs[start:start + batch_size]))
                     for start in range(0, len(inputs), batch_size)]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        except (ValueError, TypeError, tf.errors.OpError) as error:  # the model's inputs
            prefix = f"{self.label}: " if self.label else ""
            raise loading.ModelError(f"{prefix}cannot run model {self.path}: "
                                     f"{errors.first_line(error)}")


class TFLiteMember:
    """A .tflite model run by LiteRT in a child process (pie.models.tflite_child), so
    a native crash of the runtime on a hostile model is one ModelError naming the
    member; inputs go in batches, the input tensor resized to the batch.

    `interpreter` answers get_input_details / get_output_details as the child read
    them; `input` and `output` are the first of each.
    """

    def __init__(self, path, num_threads=None, label=None):
        self.path, self.label, self.num_threads = path, label, num_threads
        self.interpreter = self._guard(lambda: self._start(num_threads))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def _start(self, num_threads):
        loading.check_tflite(self.path)
        return tflite_child.Runner(self.path, num_threads)

    def _guard(self, work):
        """Runs `work`; a refusal or crash of the child is one line naming the member."""
        prefix = f"{self.label}: " if self.label else ""
        try:
            return work()
        except tflite_child.ChildError as error:
            raise loading.ModelError(f"{prefix}cannot run TFLite model {self.path}: {error}")
        except loading.ModelError as error:
            raise loading.ModelError(f"{prefix}{error}")

    def logits(self, inputs, batch_size):
        return self._guard(lambda: self.interpreter.logits(inputs, batch_size))

    def close(self):
        self.interpreter.close()


def load_member(workdir, row):
    """The runnable model of a manifest row (a dict or Series)."""
    path = Workdir(workdir).model_path(row)
    label = f"manifest member {row['member_id']}"
    if path.endswith(loading.TFLITE_SUFFIX):
        return TFLiteMember(path, num_threads=TFLITE_THREADS, label=label)
    try:
        loading.kind(path)
        return KerasMember(path, label=label)
    except loading.ModelError as error:
        raise loading.ModelError(f"manifest member {row['member_id']}: {error}")


def check_model_files(workdir, manifest):
    """Fails before any work when a manifest row's model file is missing or unsafe.

    The check reads the files but loads no model (pie.models.loading.check).
    """
    for row in manifest.to_dict("records"):
        try:
            loading.check(Workdir(workdir).model_path(row))
        except loading.ModelError as error:
            raise loading.ModelError(f"manifest member {row['member_id']}: {error}")


def needs_predictions(workdir, row, distribution=records.CLEAN, split="test"):
    """Whether a member's predictions file is missing or older than its model file.

    A retrained member (a new model file) gets new predictions on the next run.
    """
    workdir = Workdir(workdir)
    path = workdir.existing_predictions_path(row["member_id"], distribution, split)
    model = workdir.model_path(row)
    return not os.path.exists(path) or (
        os.path.exists(model) and os.path.getmtime(path) < os.path.getmtime(model))


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predictions_frame(member_id, logits, labels, image_ids, class_subset=None):
    """The predictions contract (docs/contracts.md) from a member's logits.

    `class_subset` restricts the argmax to those class ids (ImageNet-A's 200).
    """
    logits = np.asarray(logits, np.float64)
    if class_subset is not None:
        masked = np.full_like(logits, -np.inf)
        masked[:, class_subset] = logits[:, class_subset]
        logits = masked
    probs = softmax(logits)
    labels = np.asarray(labels, np.int64)
    num_classes = probs.shape[1]
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise records.ContractError(
            f"labels outside the model's {num_classes} classes (0..{num_classes - 1})")
    predicted = probs.argmax(axis=1)
    rows = np.arange(len(probs))
    frame = pd.DataFrame({
        "member_id": member_id, "image_id": np.asarray(image_ids, np.int64), "label": labels,
        "predicted": predicted, "prob_predicted": probs[rows, predicted].astype(np.float32),
        "prob_label": probs[rows, labels].astype(np.float32)})
    if num_classes > TOP_K:
        top = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K]
        columns = [pd.Series(top[:, k]).astype(str) for k in range(TOP_K)]
        frame["top5"] = columns[0].str.cat(columns[1:], sep=" ").to_numpy()
    return frame


# Streamed eval sets: inputs gathered into one model call per this many bytes, since
# every call has a fixed cost (about 40 ms here) whatever its size.
CALL_BYTES = 256 << 20


def member_logits(member, source, arrays, batch_size, call_bytes=CALL_BYTES):
    """Logits, labels, ids of one member: in memory, or streamed in calls of call_bytes."""
    if arrays is not None:
        inputs, labels, ids = arrays
        return member.logits(inputs, batch_size), labels, ids
    logits, labels, ids, pending = [], [], [], []

    def run_pending():
        inputs = pending[0] if len(pending) == 1 else np.concatenate(pending)
        logits.append(member.logits(inputs, batch_size))
        pending.clear()

    for batch in source.eval_batches(batch_size).as_numpy_iterator():
        pending.append(batch["inputs"])
        labels.append(batch["label"])
        ids.append(batch["image_id"])
        if sum(part.nbytes for part in pending) >= call_bytes:
            run_pending()
    if pending:
        run_pending()
    return np.concatenate(logits), np.concatenate(labels), np.concatenate(ids)


# The stage whose stamp records clean predictions, whoever computes them: training,
# quantize and import write each new member's clean predictions from the pass that
# gives its manifest top-1 (one evaluation per member), and the predictions stage
# then finds them current.
PREDICTIONS_STAGE = "pie_dataset_gen.predictions"


def write_member(workdir, member_id, logits, labels, ids, split, stage=None):
    """Builds and writes one member's predictions file; returns its top-1. `stage`:
    the stage recorded as its writer (default: the one running)."""
    frame = predictions_frame(member_id, logits, labels, ids)
    records.write_predictions(Workdir(workdir).predictions_path(member_id, split=split), frame,
                              stage=stage)
    return float((frame["predicted"] == frame["label"]).mean())


def record_clean_predictions(workdir, member_id, member, source, batch_size):
    """The clean predictions of a new member (`member`: a runnable KerasMember or
    TFLiteMember, or anything with `logits(inputs, batch_size)`), written as the
    predictions stage writes them, after its model file; its top-1 on the eval split."""
    logits, labels, ids = member_logits(member, source, None, batch_size)
    if len(labels) == 0:
        raise records.ContractError("the eval split is empty")
    return write_member(workdir, member_id, logits, labels, ids, "test",
                        stage=PREDICTIONS_STAGE)


def predict_members(workdir, members, source, arrays, batch_size, split, progress=None):
    """Runs (member_id, model) pairs; each file is written while the next model runs.

    `members` may be a generator, so a model is loaded only when its turn comes.
    """
    def done(member_id, started, future):
        top1 = future.result()
        if progress:
            progress.advance(1, f"{member_id}: top-1 {top1:.4f} ({time.time() - started:.1f}s)")

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for member_id, member in members:
            started = time.time()
            logits, labels, ids = member_logits(member, source, arrays, batch_size)
            if pending:
                done(*pending)
            pending = (member_id, started, writer.submit(
                write_member, workdir, member_id, logits, labels, ids, split))
        if pending:
            done(*pending)
