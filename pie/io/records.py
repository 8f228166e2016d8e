"""Files that connect the stages: atomic writes, the population manifest, predictions.

Every stage reads and writes through these helpers, so the file contracts in
`docs/contracts.md` have one implementation. Writes go to a temporary file in the
same folder and are renamed into place, so a killed run never leaves a
half-written file behind.
"""
import contextlib
import fcntl
import json
import os
import tempfile

import numpy as np
import pandas as pd

from pie.io import errors
from pie.io.workdir import CLEAN, Workdir

MANIFEST_COLUMNS = [
    "member_id", "method", "sparsity", "measured_sparsity", "seed", "dataset",
    "model", "top1", "path", "model_file",
]
PREDICTION_COLUMNS = [
    "member_id", "image_id", "label", "predicted", "prob_predicted", "prob_label",
]
DENSE_METHOD = "dense"
QUANTIZED_PREFIX = "quant_"  # methods of post-training quantized members


ContractError = errors.ContractError


# --------------------------------------------------------------------------- atomic


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; renames it onto `path` on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """A JSON input file; a missing or broken one is a ContractError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ContractError(f"missing input file {path}")
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise ContractError(f"{path} is not readable JSON: {error}")


def write_csv(path, frame, columns=None):
    """Writes `frame` atomically; with `columns`, exactly those, in that order."""
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ContractError(f"cannot write {path}: missing columns {missing}")
        frame = frame[list(columns)]
    # Level 1: prediction files are written once per member and read a few times;
    # higher levels cost several times the model's own inference time.
    compression = {"method": "gzip", "compresslevel": 1} if path.endswith(".gz") else None
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, compression=compression)


def read_csv(path, required_columns=(), **kwargs):
    """A CSV input file with its required columns; any defect is a ContractError.

    `usecols` and `dtype` keyword arguments go to pandas; the required columns are
    checked on the header first, so a missing one is named, not a pandas error.
    """
    if not os.path.exists(path):
        raise ContractError(f"missing input file {path}")
    try:
        header = pd.read_csv(path, nrows=0).columns
        missing = [c for c in required_columns if c not in header]
        if missing:
            raise ContractError(f"{path} lacks columns {missing}")
        return pd.read_csv(path, **kwargs)
    except (OSError, EOFError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, ContractError):
            raise
        # EmptyDataError, a truncated gzip, a bad number: all mean a broken file.
        raise ContractError(f"{path} is not a readable CSV: {error}")


@contextlib.contextmanager
def locked(path):
    """An exclusive advisory lock, so shards sharing a workdir take turns."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------- manifest


def read_manifest(workdir, required=True):
    """The population manifest, sorted by member_id; empty frame when absent."""
    path = Workdir(workdir).manifest
    if not os.path.exists(path):
        if required:
            raise ContractError(
                f"no population manifest at {path}: run save_checkpoint.train first")
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = read_csv(path, MANIFEST_COLUMNS)
    return frame.sort_values("member_id", kind="stable").reset_index(drop=True)


def add_manifest_rows(workdir, rows):
    """Adds or replaces rows (dicts keyed by column) by member_id, under a lock."""
    new = pd.DataFrame(rows)
    missing = [c for c in MANIFEST_COLUMNS if c not in new.columns]
    if missing:
        raise ContractError(f"manifest rows lack columns {missing}")
    workdir = Workdir(workdir)
    with locked(workdir.manifest_lock):
        current = read_manifest(workdir, required=False)
        current = current[~current["member_id"].isin(new["member_id"])]
        merged = pd.concat([current, new], ignore_index=True)
        columns = MANIFEST_COLUMNS + sorted(c for c in merged.columns if c not in MANIFEST_COLUMNS)
        merged = merged.sort_values("member_id", kind="stable")
        write_csv(workdir.manifest, merged, columns)


def read_dataset_config(workdir):
    """`W/dataset.json`: how the population's data was loaded (save_checkpoint.train)."""
    path = Workdir(workdir).dataset_config
    if not os.path.exists(path):
        raise ContractError(
            f"no {os.path.basename(path)} in '{workdir}': run save_checkpoint.train first")
    return read_json(path)


def variant_key(method, sparsity):
    """The name of a (method, sparsity) population, e.g. `magnitude_0.9`."""
    return f"{method}_{float(sparsity):g}"


# ---------------------------------------------------------------------- predictions


# Compact dtypes: 9 million rows (ImageNet x 180 members) fit in about 250 MB.
PREDICTION_DTYPES = {"image_id": "int64", "label": "int32", "predicted": "int32",
                     "prob_predicted": "float32", "prob_label": "float32"}


def read_predictions(workdir, manifest, distribution=CLEAN, split="test"):
    """Every manifest member's predictions, in compact dtypes.

    Returns one frame with `member` (the member's row number in `manifest`, in
    place of the `member_id` string) and the columns of PREDICTION_DTYPES. Fails
    when a member has no predictions file or when members cover different image
    sets: every comparison downstream is image by image.
    """
    if manifest.empty:
        raise ContractError("the manifest has no members")
    workdir = Workdir(workdir)
    frames, reference = [], None
    for position, member_id in enumerate(manifest["member_id"]):
        path = workdir.predictions_path(member_id, distribution, split)
        if not os.path.exists(path):
            raise ContractError(
                f"no predictions for member {member_id} on {distribution} ({path}): "
                "run pie_dataset_gen.predictions first")
        frame = read_csv(path, list(PREDICTION_DTYPES), usecols=list(PREDICTION_DTYPES),
                         dtype=PREDICTION_DTYPES)
        ids = np.sort(frame["image_id"].to_numpy())
        if reference is None:
            reference = (member_id, ids)
        elif not np.array_equal(ids, reference[1]):
            raise ContractError(
                f"members {reference[0]} and {member_id} have predictions on different "
                "image sets; rerun pie_dataset_gen.predictions for both")
        frame.insert(0, "member", np.int32(position))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
