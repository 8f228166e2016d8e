"""A member's training history: `history.csv` beside its meta.json, a row per epoch.

Columns (docs/contracts.md): epoch (1-based, epochs done), step (optimizer steps
done), loss and accuracy (the epoch's training means, as Keras logs them),
learning_rate (the rate of the epoch's last step), sparsity (fraction of the
prunable kernels' weights that are zero at the epoch's end: the pruning masks of
a member carrying tfmot's wrappers, else exact zeros), wall_time_s (seconds the
epoch's training took, checkpointing excluded).

The file is rewritten whole (atomically) after every epoch; a member resumed
after epoch k keeps its first k rows and drops any row of an epoch it trains
again (a run killed between the row and the epoch's checkpoint).
"""
import math
import os
import time

import numpy as np

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras

from pie.compress import schedules

COLUMNS = ("epoch", "step", "loss", "accuracy", "learning_rate", "sparsity", "wall_time_s")
ACCURACY_LOGS = ("acc", "accuracy", "sparse_categorical_accuracy")


def read(path):
    """The rows of a history.csv (a pandas frame with COLUMNS); an empty frame when the
    file is absent or not a history (a damaged one is started again)."""
    import pandas as pd
    if not os.path.isfile(path):
        return pd.DataFrame(columns=list(COLUMNS))
    try:
        frame = pd.read_csv(path, nrows=1_000_000)
        if list(frame.columns) != list(COLUMNS):
            raise ValueError("not a history")
        frame = frame.astype({"epoch": "int64", "step": "int64"})
        return frame.astype({name: "float64" for name in COLUMNS[2:]})
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError):
        return pd.DataFrame(columns=list(COLUMNS))


def _prunable(layer, include_classifier):
    from pie.models import builders
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return False
    if layer.name == builders.CLASSIFIER and not include_classifier:
        return False
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))


def measured_sparsity(model, include_classifier=False):
    """Fraction of zeros over the prunable kernels: a wrapped layer's mask, a plain
    layer's kernel."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            if not _prunable(layer.layer, include_classifier):
                continue
            for _, mask, _ in layer.pruning_vars:
                values = mask.numpy()
                zeros += int(np.count_nonzero(values == 0))
                total += values.size
        elif _prunable(layer, include_classifier):
            values = layer.kernel.numpy()
            zeros += int(np.count_nonzero(values == 0))
            total += values.size
    return zeros / total if total else 0.0


class HistoryCSV(keras.callbacks.Callback):
    """Writes the member's history.csv row by row (see the module's doc)."""

    def __init__(self, path, include_classifier=False):
        super().__init__()
        self.path, self.include_classifier = path, include_classifier
        self.rows = None
        self.epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:  # first epoch of this run: keep the epochs done before
            frame = read(self.path)
            self.rows = [row for row in frame.to_dict("records") if row["epoch"] <= epoch]
        else:
            self.rows = [row for row in self.rows if row["epoch"] <= epoch]
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        elapsed = time.time() - (self.epoch_start or time.time())
        optimizer = self.model.optimizer
        accuracy = next((logs[name] for name in ACCURACY_LOGS if name in logs), math.nan)
        self.rows.append({
            "epoch": epoch + 1,
            "step": int(schedules.inner_optimizer(optimizer).iterations.numpy()),
            "loss": float(logs.get("loss", math.nan)),
            "accuracy": float(accuracy),
            "learning_rate": schedules.current_rate(optimizer),
            "sparsity": round(measured_sparsity(self.model, self.include_classifier), 6),
            "wall_time_s": round(elapsed, 3)})
        self._write()

    def _write(self):
        import pandas as pd
        from pie.io import records
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        records.write_csv(self.path, frame, columns=COLUMNS, record=False)
