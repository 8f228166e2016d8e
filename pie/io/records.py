"""Files that connect the stages: atomic writes, the population manifest, predictions.

Prediction files are Parquet (pyarrow): a stage reads only the columns it needs,
without parsing text. Workdirs written before hold gzip CSV prediction files; they
are read the same way (`read_prediction_file`), and a rewrite replaces them.

Every stage reads and writes through these helpers, so the file contracts in
`docs/contracts.md` have one implementation. Writes go to a temporary file in the
same folder and are renamed into place, so a killed run never leaves a
half-written file behind.
"""
import collections
import concurrent.futures
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import re
import tempfile
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from pie.io import bounded_json, checkpoint_state, csv_text, errors, journal, safe_paths
from pie.io import workdir as layout
from pie.io.workdir import CLEAN, Workdir

MANIFEST_COLUMNS = [
    "member_id", "method", "sparsity", "measured_sparsity", "seed", "dataset",
    "model", "top1", "path", "model_file",
]
PREDICTION_COLUMNS = [
    "member_id", "image_id", "label", "predicted", "prob_predicted", "prob_label",
]
# Written when present: top5 (more than 5 classes), distribution (shifted sets).
OPTIONAL_PREDICTION_COLUMNS = ["top5", "distribution"]
DENSE_METHOD = "dense"
# Extra column: the member's recipe digest (pie.compress.recipes), empty when unknown.
RECIPE_COLUMN = "recipe"
RECIPE_DIGEST = re.compile(r"^[0-9a-f]{12}$")
MAX_SEED = 2**31 - 1  # a manifest seed: the int32 range every seeding API (numpy, TF) takes
QUANTIZED_PREFIX = "quant_"  # methods of post-training quantized members


ContractError = errors.ContractError
# A member's ckpt/checkpoint, checked before tf.train.CheckpointManager opens it.
check_checkpoint_state = checkpoint_state.check


# --------------------------------------------------------------------------- atomic


TMP_PREFIX = ".tmp-"  # `.tmp-<host>@<pid>-...`: whose temporary it is (journal.owner)
STALE_AFTER_S = journal.STALE_AFTER_S


_fsync = journal.fsync


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; renames it onto `path` on success.

    The file is flushed to disk before the rename and the folder after it, so a
    crash of the machine leaves the old file or the whole new one.
    """
    # A linked file or folder of a workdir is refused before anything is written.
    safe_paths.checked(path, "file")
    folder = os.path.dirname(os.path.abspath(path))
    journal.makedirs(folder)
    prefix = f"{TMP_PREFIX}{journal.owner()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if os.path.isfile(tmp):
            _fsync(tmp)
        journal.replace(tmp, path)  # undoable in a --force run
        _fsync(folder, directory=True)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(root):
    """Removes `.tmp-*` files that killed writers left under `root`; returns them.

    A temporary whose writer still runs on this host is kept (shards share a
    workdir); one of another host, or of an unknown writer, after STALE_AFTER_S.
    """
    removed, now = [], time.time()
    for folder, subfolders, names in os.walk(root, followlinks=False):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(TMP_PREFIX) and journal.owner_is_gone(
                    name[len(TMP_PREFIX):], path, now):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return sorted(removed)


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """A JSON input file; a missing, broken, linked, too large or too deeply nested
    one is a ContractError naming it (bounded_json, safe_paths)."""
    try:
        with safe_paths.open_regular(path, encoding="utf-8") as f:
            return bounded_json.read(f, path)
    except FileNotFoundError:
        raise ContractError(f"missing input file {path}")
    except OSError as error:
        if os.path.islink(path):  # (outside a workdir: O_NOFOLLOW refused it)
            raise ContractError(f"{path} is a symbolic link: links are not read")
        raise ContractError(f"{path} is not readable JSON: {error}")
    except UnicodeDecodeError as error:
        raise ContractError(f"{path} is not readable JSON: {error}")


# Class names (classes.json, dataset.json's class_names): at most this many, whatever
# the data says (ImageNet-21k, the largest label set in common use, has 21,843); the
# analysis stages allow fewer, derived from the predictions (read_class_names).
MAX_CLASSES = 22_000
# A classes.json may name classes no label or prediction names (an eval split
# without some classes), up to twice the classes named, or this many.
MIN_CLASS_ALLOWANCE = 1_000


def class_limit(largest_class_id=None):
    """How many class names are read when labels and predictions name classes up to
    `largest_class_id` (None: not known, the documented maximum)."""
    if largest_class_id is None:
        return MAX_CLASSES
    return min(MAX_CLASSES, max(MIN_CLASS_ALLOWANCE, 2 * (int(largest_class_id) + 1)))


def read_class_names(path, largest_class_id=None):
    """`W/classes.json`: a non-empty list of strings, no longer than class_limit(),
    checked before anything is allocated per class."""
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(
            isinstance(name, str) for name in names):
        raise ContractError(f"{path} must hold a non-empty JSON list of class names (strings)")
    limit = class_limit(largest_class_id)
    if len(names) > limit:
        seen = ("" if largest_class_id is None else
                f" (labels and predictions name classes 0..{int(largest_class_id)})")
        raise ContractError(f"{path} lists {len(names)} class names: at most {limit} are "
                            f"read{seen}")
    _require_unique(path, names)
    return names


# ------------------------------------------------------------------- written files

# Every table (and figure) a stage writes is recorded in that stage's stamp beside it
# (workdir.writer_stamp, `.<stage>.stamp.json`), under `outputs`: {file name: {rows,
# bytes, sha256, mtime_ns}}. A reader that finds another file (truncated, cut,
# edited) says so and names the stage to rerun. The same stamp holds the stage's
# freshness (`inputs`, `options`: pie.analysis.stage_io), so there is one record.
STAMPS_LOCK = ".stamps.lock"  # one per folder: shards record into shared stamps
# Workdirs of older versions kept the records in this file beside the tables; it is
# still read for a file no stamp lists (a rerun of the stage moves it to a stamp).
LEGACY_WRITTEN = ".written.json"
# The stamp of files written outside any stage (a test, a script).
UNKNOWN_WRITER = "unknown"
_WRITERS = []  # stages named by writing_as, innermost last


def file_sha256(path):
    """A file's SHA-256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def writing_as(stage):
    """Files written inside are recorded as written by the stage module `stage`
    (for a stage's library entry point, called without the command line)."""
    _WRITERS.append(stage)
    try:
        yield
    finally:
        _WRITERS.pop()


def current_stage():
    """The stage whose files are being written: the innermost `writing_as` (the command
    line and the Python API of every stage set it), else None. Nothing is inferred."""
    return _WRITERS[-1] if _WRITERS else None


def _listed_writer(path):
    """The stage module whose stamp records the file at `path` in FILES (the one stage
    that writes it), or None."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return next((entry.writer for entry in layout.FILES.values()
                 if (entry.folder, entry.name) == (folder, os.path.basename(path))), None)


def _is_record(value):
    return isinstance(value, dict) and isinstance(value.get("sha256"), str)


def read_stamp(stamp):
    """A stamp's content as a dict; {} when it is missing or unreadable. A stamp that
    is a link (or lies behind one), a FIFO, too large or too deep is a ContractError:
    workdir content is never read through a link."""
    try:
        with safe_paths.open_regular(stamp, encoding="utf-8") as handle:
            content = bounded_json.read(handle, stamp)
    except ContractError as error:
        if "is not readable JSON" in str(error):
            return {}
        raise
    except UnicodeDecodeError:
        return {}
    except OSError:
        if os.path.islink(stamp):
            raise ContractError(f"{stamp} is a symbolic link: stamps are not read through "
                                "a link")
        return {}
    return content if isinstance(content, dict) else {}


def stamp_records(content):
    """{file name: record} of a stamp's content (entries of other shapes left out)."""
    outputs = content.get("outputs")
    if not isinstance(outputs, dict):
        return {}
    return {name: record for name, record in outputs.items() if _is_record(record)}


@contextlib.contextmanager
def stamp_lock(stamp):
    """The lock of the stamps of one folder: writers take turns updating them."""
    with locked(os.path.join(os.path.dirname(os.path.abspath(stamp)), STAMPS_LOCK)):
        yield


def file_record(path, rows=None):
    """The record of a file as it is now: bytes, modification time, SHA-256 (rows)."""
    status = os.stat(path)
    record = {"bytes": status.st_size, "mtime_ns": status.st_mtime_ns,
              "sha256": file_sha256(path)}
    if rows is not None:
        record["rows"] = int(rows)
    return record


def matches_status(path, record):
    """Whether `path` has the size and modification time `record` gives (no hashing)."""
    if not _is_record(record) or not os.path.isfile(path):
        return False
    status = os.stat(path)
    return (status.st_size, status.st_mtime_ns) == (record.get("bytes"), record.get("mtime_ns"))


def record_written(path, rows=None, stage=None):
    """Records a file just written (rows, bytes, digest) in its writer's stamp.

    The writer is `stage`, else the stage running (current_stage), else the one
    FILES names. One file has one record: it leaves any other stamp of the folder.
    The stamp's `inputs` are dropped until the stage's `write_stamp`, so a stage
    killed between two outputs is not taken as up to date.
    """
    writer = stage or current_stage() or _listed_writer(path) or UNKNOWN_WRITER
    stamp = layout.writer_stamp(path, writer)
    name = os.path.basename(path)
    record = file_record(path, rows)  # the one hash of this write, outside the lock
    with stamp_lock(stamp):
        for other in layout.stamps_in(os.path.dirname(stamp)):
            content = read_stamp(other)
            if other != stamp and name in stamp_records(content):
                del content["outputs"][name]
                write_json(other, content)
        content = read_stamp(stamp)
        content.pop("inputs", None)
        content["stage"] = writer
        content["outputs"] = dict(stamp_records(content), **{name: record})
        write_json(stamp, content)


# {folder: {stamp: content}} while a `stamps_read_once` block runs, else None; the
# blocks running (several threads may each be in one).
_STAMPS_READ = None
_STAMP_BLOCKS = [0]
_STAMP_BLOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def stamps_read_once():
    """Inside, `written_record` reads each folder's stamps once: for checking the
    many files of one folder against stamps that do not change meanwhile. The
    cache lives until the last block running ends."""
    global _STAMPS_READ
    with _STAMP_BLOCKS_LOCK:
        if _STAMP_BLOCKS[0] == 0:
            _STAMPS_READ = {}
        _STAMP_BLOCKS[0] += 1
    try:
        yield
    finally:
        with _STAMP_BLOCKS_LOCK:
            _STAMP_BLOCKS[0] -= 1
            if _STAMP_BLOCKS[0] == 0:
                _STAMPS_READ = None


def _folder_stamps(folder):
    """{stamp path: content} of every stage's stamp in `folder`."""
    cache = _STAMPS_READ
    if cache is not None and folder in cache:
        return cache[folder]
    stamps = {stamp: read_stamp(stamp) for stamp in layout.stamps_in(folder)}
    if cache is not None:
        cache[folder] = stamps
    return stamps


def written_record(path):
    """`(writer, record)` of the file `path`; `(None, None)` when nothing lists it.

    The record is in the stamp of the writer FILES names, else in another stamp
    of the folder, else (an older workdir) in its `.written.json`.
    """
    name = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    listed = _listed_writer(path)
    stamps = _folder_stamps(folder)
    if listed:  # its stamp first, read even when the listing lacks it
        listed_stamp = layout.writer_stamp(path, listed)
        first = {listed_stamp: stamps.get(listed_stamp) or read_stamp(listed_stamp)}
        stamps = dict(first, **{k: v for k, v in stamps.items() if k != listed_stamp})
    for stamp, content in stamps.items():
        record = stamp_records(content).get(name)
        if record is not None:
            writer = content.get("stage")
            return (writer if isinstance(writer, str) else UNKNOWN_WRITER), record
    record = read_stamp(os.path.join(folder, LEGACY_WRITTEN)).get(name)
    if _is_record(record):
        return record.get("writer") or UNKNOWN_WRITER, record
    return None, None


def forget_written(path):
    """Removes the record of `path` (a file the user now owns, e.g. edited by hand)."""
    name = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    with stamp_lock(path):
        for stamp in layout.stamps_in(folder) + [os.path.join(folder, LEGACY_WRITTEN)]:
            content = read_stamp(stamp)
            if name in stamp_records(content):
                del content["outputs"][name]
                write_json(stamp, content)
            elif _is_record(content.get(name)):  # an older workdir's ledger
                del content[name]
                write_json(stamp, content)


def mismatch(path, record, content=None):
    """How `path` (or its `content`, bytes already read) differs from `record`, or None."""
    stat = os.stat(path) if content is None else None
    size = len(content) if content is not None else stat.st_size
    if size != record.get("bytes"):
        return f"now {size} bytes"
    if stat is not None and stat.st_mtime_ns == record.get("mtime_ns"):
        return None  # the file as written (same size and modification time): not hashed
    digest = (hashlib.sha256(content).hexdigest() if content is not None
              else file_sha256(path))
    return None if digest == record.get("sha256") else "now another SHA-256, same size"


def _rerun(writer):
    return writer if writer != UNKNOWN_WRITER else "the stage that writes it"


def check_written(path, stage=None):
    """Fails when `path` is not the file its writer recorded (truncated, cut or edited).

    A file without a record (written by hand or by an older version) is accepted,
    unless `stage` is given: then it must be listed in that stage's stamp.
    """
    safe_paths.checked(path, "file")
    writer, record = written_record(path)
    if stage is not None and (record is None or writer != stage):
        raise ContractError(
            f"{path} is not listed in {layout.writer_stamp(path, stage)}: only files "
            f"{stage} wrote are read; rerun {stage}")
    if record is None or not os.path.exists(path):
        return
    problem = mismatch(path, record)
    if problem:
        who = writer if writer != UNKNOWN_WRITER else "its stage"
        rows = f"{record['rows']} rows, " if "rows" in record else ""
        raise ContractError(
            f"{path} changed after {who} wrote it ({rows}{record.get('bytes')} bytes; "
            f"{problem}): truncated or edited? rerun {_rerun(writer)}")


def write_csv(path, frame, columns=None, record=True):
    """Writes `frame` atomically; with `columns`, exactly those, in that order.

    With `record`, the file's rows and digest go to its writer's stamp (check_written);
    files users may edit by hand (the manifest) are not recorded.
    """
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ContractError(f"cannot write {path}: missing columns {missing}")
        frame = frame[list(columns)]
    with atomic_path(path) as tmp:
        # Level 1: old-style prediction files were written once per member and read a
        # few times; higher levels cost several times the model's own inference time.
        with (gzip.open(tmp, "wb", compresslevel=1) if path.endswith(".gz")
              else open(tmp, "wb")) as handle:
            csv_text.write(frame, handle)
    if record:
        record_written(path, len(frame))


def read_csv(path, required_columns=(), check_record=True, **kwargs):
    """A CSV input file with its required columns; any defect is a ContractError.

    `usecols` and `dtype` keyword arguments go to pandas; the required columns are
    checked on the header first, so a missing one is named, not a pandas error.
    `check_record=False` for files users may edit by hand (the manifest, validated
    row by row instead): an edit there is not damage. A linked file or folder of a
    workdir, or a FIFO, is refused (safe_paths) before pandas opens it.
    """
    safe_paths.checked(path, "file")
    if not os.path.exists(path):
        raise ContractError(f"missing input file {path}")
    if check_record:
        check_written(path)
    try:
        header = pd.read_csv(path, nrows=0).columns
        missing = [c for c in required_columns if c not in header]
        if missing:
            raise ContractError(f"{path} lacks columns {missing}")
        # Text values written with a spreadsheet guard (csv_text) read back as written.
        return csv_text.unguard(pd.read_csv(path, **kwargs))
    except (OSError, EOFError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, ContractError):
            raise
        # EmptyDataError, a truncated gzip, a bad number: all mean a broken file.
        raise ContractError(f"{path} is not a readable CSV: {error}")


@contextlib.contextmanager
def locked(path, wait=True, folder=False):
    """An exclusive advisory lock, so shards sharing a workdir take turns. Yields
    whether this process holds it: always with `wait`; without, only when nobody
    else held it. The lock file is a regular file opened without following a link
    or blocking on a FIFO (safe_paths.open_lock); anything else is a ContractError.
    With `folder`, `path` is an existing folder, locked itself (no file is made)."""
    if folder:
        fd = safe_paths.open_folder_lock(path)
    else:
        parent = os.path.dirname(os.path.abspath(path))
        safe_paths.checked(parent, "folder")
        os.makedirs(parent, exist_ok=True)
        fd = safe_paths.open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- manifest


# Names that become file or folder names (member folders, prediction files, variant
# folders): letters, digits and `._-`, starting with a letter or digit (no `..`).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_COLUMNS = ("member_id", "method", "model")
MODEL_SUFFIXES = (".keras", ".tflite")


def key_sparsity(value):
    """A sparsity at the precision of its variant key (`:g`, 6 digits); -0.0 is 0."""
    return float(f"{float(value):g}") + 0.0


def _inside(workdir, relative):
    """Why `relative` (a manifest path) does not stay inside the workdir, or None."""
    if not relative or os.path.isabs(relative) or relative.startswith("~"):
        return "must be a path relative to the workdir"
    parts = relative.replace("\\", "/").split("/")
    if ".." in parts or "" in parts[:-1] or "." in parts:
        return "must not hold '..', '.' or empty parts"
    root = os.path.realpath(workdir)
    target = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, target]) != root:
        return "leads outside the workdir through a symbolic link"
    try:
        safe_paths.check_inside(workdir, os.path.join(root, relative))
    except ContractError:
        return "passes through a symbolic link: nothing in a workdir is read through a link"
    return None


def name_problem(column, value):
    return (f"{column} {value!r} is not allowed: use letters, digits and '._-', starting "
            "with a letter or digit")


def check_names(frame, columns, path):
    """Fails on the first value of `columns` that could not name a file or folder."""
    for column in columns:
        for position, value in enumerate(frame[column].astype(str)):
            if not SAFE_NAME.match(value):
                raise ContractError(f"{path} row {position + 1}: {name_problem(column, value)}")


def _shown(value):
    """A cell as the user wrote it: 'text' quoted, numbers plain (not np.int64(7))."""
    return repr(value.item() if hasattr(value, "item") else value)


def validate_manifest(frame, workdir, path):
    """Checks every row of a manifest; returns it with sparsity at key precision.

    The rules (docs/contracts.md): name columns match SAFE_NAME; `path` and
    `model_file` are relative, hold no `..` and resolve inside the workdir (links
    included); `model_file` ends in .keras or .tflite; `sparsity` is a number in
    [0, 1); `seed` a non-negative integer; `member_id`s are unique and one
    (method, sparsity, seed) is one member.
    """
    def bad(position, message):
        member = frame["member_id"].iloc[position]
        raise ContractError(f"{path} row {position + 1} (member_id {member!r}): {message}")

    frame = frame.copy()
    for column in MANIFEST_COLUMNS:
        empty = frame[column].isna().to_numpy()
        if column not in ("measured_sparsity", "top1") and empty.any():
            bad(int(np.flatnonzero(empty)[0]),
                f"{column} is empty (a truncated or hand-broken manifest?)")
    for column in NAME_COLUMNS:
        for position, value in enumerate(frame[column].astype(str)):
            if not SAFE_NAME.match(value):
                bad(position, name_problem(column, value))
    for position, value in enumerate(frame["dataset"].astype(str)):
        if not value.isprintable():  # names no file; one line in every message
            bad(position, f"dataset {value!r} is not a dataset name")
    for column in ("path", "model_file"):
        for position, value in enumerate(frame[column].astype(str)):
            problem = _inside(workdir, value)
            if problem:
                bad(position, f"{column} {value!r} {problem}")
    for position, value in enumerate(frame["model_file"].astype(str)):
        if not value.endswith(MODEL_SUFFIXES):
            bad(position, f"model_file {value!r} must end in .keras or .tflite")
    for column, low, high in (("sparsity", 0.0, 1.0), ("measured_sparsity", 0.0, 1.0),
                              ("top1", 0.0, 1.0)):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
        given = frame[column].notna().to_numpy()
        wrong = given & ~((values >= low) & (values <= high))
        if column == "sparsity":
            wrong |= values >= high
        if wrong.any():
            position = int(np.flatnonzero(wrong)[0])
            interval = "[0, 1)" if column == "sparsity" else "[0, 1]"
            bad(position, f"{column} {_shown(frame[column].iloc[position])} is not a number in "
                          f"{interval}")
        frame[column] = values
    frame["sparsity"] = [key_sparsity(value) for value in frame["sparsity"]]
    seeds = pd.to_numeric(frame["seed"], errors="coerce").to_numpy(np.float64)
    # bounded before the cast: 1e30 would otherwise wrap to -9223372036854775808
    wrong = ~((seeds >= 0) & (seeds <= MAX_SEED) & (np.mod(seeds, 1) == 0))
    if wrong.any():
        position = int(np.flatnonzero(wrong)[0])
        bad(position, f"seed {_shown(frame['seed'].iloc[position])} is not an integer in "
                      f"[0, {MAX_SEED}]")
    frame["seed"] = seeds.astype(np.int64)
    if RECIPE_COLUMN in frame.columns:
        for position, value in enumerate(frame[RECIPE_COLUMN]):
            if isinstance(value, str) and value and not RECIPE_DIGEST.match(value):
                bad(position, f"recipe {value!r} is not a recipe digest (12 hex digits, or "
                              "empty when unknown)")
    twice = frame["member_id"].duplicated()
    if twice.any():
        bad(int(np.flatnonzero(twice)[0]), "member_id listed twice: every member is one row")
    twice = frame.duplicated(["method", "sparsity", "seed"])
    if twice.any():
        position = int(np.flatnonzero(twice)[0])
        row = frame.iloc[position]
        first = frame.loc[(frame["method"] == row["method"])
                          & (frame["sparsity"] == row["sparsity"])
                          & (frame["seed"] == row["seed"]), "member_id"].iloc[0]
        bad(position, f"the same member (method {row['method']}, sparsity "
                      f"{row['sparsity']:g}, seed {row['seed']}) as {first!r}")
    return frame


def read_manifest(workdir, required=True):
    """The population manifest, validated, sorted by member_id; empty frame when absent."""
    path = safe_paths.checked(Workdir(workdir).manifest, "file")
    if not os.path.exists(path):
        if required:
            raise ContractError(
                f"no population manifest at {path}: run save_checkpoint.train first")
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    # The recipe digest is text, whatever its hex digits look like (1234e56789ab).
    frame = validate_manifest(read_csv(path, MANIFEST_COLUMNS, check_record=False,
                                       dtype={RECIPE_COLUMN: str}), workdir, path)
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
        validate_manifest(merged.reset_index(drop=True), workdir, workdir.manifest)
        write_csv(workdir.manifest, merged, columns, record=False)


# A `--dataset` naming a TFRecord folder (pie.data.sources), known here without
# loading TensorFlow.
TFRECORD_PREFIX = "tfrecord:"

# dataset.json: key -> (allowed types, what the message says).
DATASET_CONFIG_TYPES = {
    "dataset": ((str,), "a dataset name"),
    "data_dir": ((str, type(None)), "a folder or null"),
    "label_attribute": ((str, type(None)), "an attribute name or null"),
    "toy_noise": ((int, float, type(None)), "a number or null"),
    "toy_seed": ((int, type(None)), "an integer or null"),
    "label_offset": ((int, type(None)), "an integer or null"),
    "num_classes": ((int,), "a positive integer"),
    "class_names": ((list,), "a list of names"),
    "family": ((str,), "a name"),
}


def read_dataset_config(workdir):
    """`W/dataset.json`: how the population's data was loaded (save_checkpoint.train),
    checked: a JSON object whose known keys have the types of DATASET_CONFIG_TYPES."""
    path = safe_paths.checked(Workdir(workdir).dataset_config, "file")
    if not os.path.exists(path):
        raise ContractError(
            f"no {os.path.basename(path)} in '{workdir}': run save_checkpoint.train first")
    config = read_json(path)
    if not isinstance(config, dict) or "dataset" not in config:
        raise ContractError(f"{path} must be a JSON object with at least a 'dataset' name")
    for key, (types, meaning) in DATASET_CONFIG_TYPES.items():
        value = config.get(key)
        if key in config and (not isinstance(value, types) or isinstance(value, bool)):
            raise ContractError(f"{path}: '{key}' must be {meaning}, got {json.dumps(value)}")
    if not 0 < config.get("num_classes", 1) <= MAX_CLASSES:
        raise ContractError(f"{path}: 'num_classes' must be a positive integer up to "
                            f"{MAX_CLASSES}, got {config['num_classes']}")
    if len(config.get("class_names", ())) > MAX_CLASSES:
        raise ContractError(f"{path}: 'class_names' lists {len(config['class_names'])} "
                            f"names: at most {MAX_CLASSES} are read")
    _check_class_names(workdir, path, config)
    return config


def _check_class_names(workdir, path, config):
    """dataset.json's class names are unique, as many as its num_classes and as
    W/classes.json lists (the training stage writes all three from one source)."""
    names = config.get("class_names")
    if names is not None:
        if not all(isinstance(name, str) for name in names):
            raise ContractError(f"{path}: 'class_names' must be a list of strings")
        _require_unique(path, names)
        if "num_classes" in config and len(names) != config["num_classes"]:
            raise ContractError(f"{path}: 'num_classes' is {config['num_classes']} but "
                                f"'class_names' lists {len(names)} names")
    classes = Workdir(workdir).classes
    if "num_classes" in config and os.path.lexists(classes):
        listed = read_class_names(safe_paths.checked(classes, "file"))
        if len(listed) != config["num_classes"]:
            raise ContractError(f"{path}: 'num_classes' is {config['num_classes']} but "
                                f"{classes} lists {len(listed)} classes")


def _require_unique(path, names):
    seen = set()
    for name in names:
        if name in seen:
            raise ContractError(f"{path} lists the class name {name!r} twice: class names "
                                "must be unique")
        seen.add(name)


def variant_key(method, sparsity):
    """The name of a (method, sparsity) population, e.g. `magnitude_0.9`."""
    return f"{method}_{float(sparsity):g}"


# ---------------------------------------------------------------------- predictions


# Compact dtypes: 9 million rows (ImageNet x 180 members) fit in about 250 MB.
PREDICTION_DTYPES = {"image_id": "int64", "label": "int32", "predicted": "int32",
                     "prob_predicted": "float32", "prob_label": "float32"}
# The same columns and types in Parquet: what files are written in and read as.
PREDICTION_SCHEMA = pa.schema([(name, pa.from_numpy_dtype(np.dtype(dtype)))
                               for name, dtype in PREDICTION_DTYPES.items()])
# zstd: the smallest files of pyarrow's codecs here, and as fast to read as snappy.
PARQUET_COMPRESSION = "zstd"


def write_predictions(path, frame, stage=None):
    """Writes one member's predictions on one distribution as Parquet, atomically.

    Writes the contract columns (docs/contracts.md) and those optional ones the
    frame has, in that order. An old gzip CSV file of the same member and
    distribution is removed once the Parquet file is in place, so a workdir never
    holds both. `stage`: the stage module whose stamp records it (record_written).
    """
    if not path.endswith(layout.PREDICTIONS_SUFFIX):
        raise ValueError(f"a predictions file ends in {layout.PREDICTIONS_SUFFIX}: {path}")
    columns = PREDICTION_COLUMNS + [c for c in OPTIONAL_PREDICTION_COLUMNS if c in frame]
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError(f"cannot write {path}: missing columns {missing}")
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    # Stored in the types readers use (int32 class ids, float32 probabilities), so a
    # read needs no cast; a class id too large for int32 fails here (a safe cast).
    try:
        table = table.cast(pa.schema([
            PREDICTION_SCHEMA.field(field.name) if field.name in PREDICTION_DTYPES else field
            for field in table.schema]))
    except (ValueError, pa.ArrowException) as error:
        raise ContractError(f"cannot write {path}: a column has the wrong type: {error}")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    record_written(path, len(table), stage=stage)
    legacy = path[:-len(layout.PREDICTIONS_SUFFIX)] + layout.LEGACY_PREDICTIONS_SUFFIX
    if os.path.exists(legacy):
        journal.remove(legacy)


# The most rows a predictions file may hold: one per image of the split predicted
# (ImageNet's 1,281,167 training images fit), checked in the file's metadata before
# anything is read, as is the size its columns unpack to: a small file that unpacks
# to gigabytes (a long run of equal values compresses to nearly nothing) is refused.
MAX_PREDICTION_ROWS = 2_000_000
# Bytes a row may unpack to, per column read: fixed-width columns their width, text
# columns (member_id, top5, distribution) this many; plus one page of slack.
MAX_TEXT_BYTES_PER_ROW = 256
UNPACKED_SLACK_BYTES = 1 << 20


def check_parquet_size(path, metadata, columns):
    """Refuses a Parquet predictions file whose metadata promises more rows than
    MAX_PREDICTION_ROWS, or more unpacked bytes in `columns` than their types allow."""
    rows = metadata.num_rows
    if rows > MAX_PREDICTION_ROWS:
        raise ContractError(f"{path} holds {rows} rows: a predictions file holds one per "
                            f"image, at most {MAX_PREDICTION_ROWS}")
    unpacked = {}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for position in range(row_group.num_columns):
            chunk = row_group.column(position)
            name = chunk.path_in_schema
            unpacked[name] = unpacked.get(name, 0) + max(chunk.total_uncompressed_size, 0)
    for name in columns:
        dtype = PREDICTION_DTYPES.get(name)
        width = np.dtype(dtype).itemsize if dtype else MAX_TEXT_BYTES_PER_ROW
        allowed = rows * (width + 8) + UNPACKED_SLACK_BYTES
        if unpacked.get(name, 0) > allowed:
            raise ContractError(
                f"{path}: column {name} unpacks to {unpacked[name]} bytes for {rows} rows "
                f"(at most {allowed}): not a predictions file this toolkit reads")


def _decoded_text(path, table):
    """`table` with its dictionary columns decoded, once no value is longer than
    MAX_TEXT_BYTES_PER_ROW (so decoding cannot grow past rows x that)."""
    for position, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type):
            continue
        column = table.column(position)
        for chunk in column.chunks:
            values = chunk.dictionary
            kind = values.type
            if len(values) and (pa.types.is_string(kind) or pa.types.is_binary(kind)
                                or pa.types.is_large_string(kind)):
                longest = pa.compute.max(pa.compute.binary_length(values)).as_py() or 0
                if longest > MAX_TEXT_BYTES_PER_ROW:
                    raise ContractError(
                        f"{path}: column {field.name} holds a value of {longest} bytes (at "
                        f"most {MAX_TEXT_BYTES_PER_ROW}): not a predictions file this "
                        "toolkit reads")
        table = table.set_column(position, field.name,
                                 column.cast(field.type.value_type))
    return table


def _prediction_table(path, columns, optional=()):
    """The `columns` (all required) and `optional` ones present, as a pyarrow Table.

    Parquet files are read column by column; an old gzip CSV file is parsed with
    pandas. A missing file or column, or a broken file, is a ContractError.
    """
    if not os.path.exists(path):
        raise ContractError(f"missing input file {path}")
    if not path.endswith(layout.PREDICTIONS_SUFFIX):
        wanted = set(columns) | set(optional)
        dtypes = {c: t for c, t in PREDICTION_DTYPES.items() if c in wanted}
        frame = read_csv(path, columns, usecols=lambda c: c in wanted, dtype=dtypes)
        return pa.Table.from_pandas(frame, preserve_index=False)
    check_written(path)
    try:
        # One open for the schema and the columns. Not read_table: its dataset set-up
        # costs more than reading a member's 50,000 rows. No threads of its own: files
        # are read several at once (`_read_ahead`).
        # Text columns come as dictionaries: a value repeated on every row is held
        # once until its length is checked (_decoded_text).
        # The footer first: columns, rows and unpacked sizes are checked before a
        # page is read.
        metadata = pq.read_metadata(path)
        names = metadata.schema.to_arrow_schema().names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ContractError(f"{path} lacks columns {missing}")
        chosen = list(columns) + [c for c in optional if c in names]
        check_parquet_size(path, metadata, chosen)
        text = [c for c in chosen if c not in PREDICTION_DTYPES]
        with pq.ParquetFile(path, read_dictionary=text or None) as parquet:
            return _decoded_text(path, parquet.read(columns=chosen, use_threads=False))
    except (OSError, ValueError, pa.ArrowException) as error:
        if isinstance(error, ContractError):
            raise
        raise ContractError(f"{path} is not a readable Parquet file: {error}")


def read_prediction_file(path, columns=None, optional=()):
    """One predictions file as a frame: Parquet, or an old workdir's gzip CSV.

    `columns` are required (default: the contract's); `optional` ones are read when
    the file has them. The columns of PREDICTION_DTYPES come in those dtypes.
    """
    columns = list(PREDICTION_COLUMNS if columns is None else columns)
    frame = _prediction_table(path, columns, optional).to_pandas()
    try:
        return frame.astype({c: t for c, t in PREDICTION_DTYPES.items() if c in frame})
    except (ValueError, TypeError) as error:
        raise ContractError(f"{path} has a column of the wrong type: {error}")


# Prediction files read at once by threads (pyarrow and zlib release the GIL), and
# how many are read ahead of the one being copied (bounds memory).
READ_THREADS = min(4, os.cpu_count() or 1)
READ_AHEAD = 8


def _read_ahead(function, items):
    """`function(item)` of each item, in order, computed by READ_THREADS threads."""
    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _typed_prediction_table(path, schema):
    """The columns of `schema` of one predictions file, in its types, none empty."""
    table = _prediction_table(path, schema.names)
    try:
        table = table.select(schema.names)
        if not table.schema.equals(schema):  # files this toolkit wrote already match
            table = table.cast(schema)
    except (ValueError, pa.ArrowException) as error:
        raise ContractError(f"{path} has a column of the wrong type: {error}")
    empty = [name for name in schema.names if table.column(name).null_count]
    if empty:
        raise ContractError(f"{path} has empty values in {empty}")
    return table


def read_predictions(workdir, manifest, distribution=CLEAN, split="test"):
    """Every manifest member's predictions, in compact dtypes.

    Returns one frame with `member` (the member's row number in `manifest`, in
    place of the `member_id` string) and the columns of PREDICTION_DTYPES. Each
    file is read once, only those columns, straight into the frame's arrays
    (members share one image set, so the first file gives every member's size):
    9 million rows take about 250 MB, with no second copy. Fails when a member has
    no predictions file or when members cover different image sets: every
    comparison downstream is image by image.
    """
    if manifest.empty:
        raise ContractError("the manifest has no members")
    workdir = Workdir(workdir)
    paths = []
    for member_id in manifest["member_id"]:
        path = workdir.existing_predictions_path(member_id, distribution, split)
        if not os.path.exists(path):
            raise ContractError(
                f"no predictions for member {member_id} on {distribution} ({path}): "
                "run pie_dataset_gen.predictions first")
        paths.append(path)
    with stamps_read_once():
        return _gather_predictions(manifest, paths, PREDICTION_SCHEMA)


def _gather_predictions(manifest, paths, schema):
    """The frame of `read_predictions`, its files read `READ_AHEAD` at a time."""
    columns, reference = None, None
    tables = _read_ahead(lambda path: _typed_prediction_table(path, schema), paths)
    for position, (member_id, path, table) in enumerate(zip(manifest["member_id"], paths,
                                                            tables)):
        ids = table.column("image_id").to_numpy()
        if reference is None:
            reference = (member_id, ids, np.sort(ids))
            twice = np.flatnonzero(reference[2][1:] == reference[2][:-1])
            if twice.size:  # (files equal to this one have no duplicates either)
                raise ContractError(
                    f"{path} lists image {int(reference[2][twice[0]])} more than once: "
                    "rerun pie_dataset_gen.predictions")
            total = len(ids) * len(manifest)
            columns = {"member": np.empty(total, np.int32)}
            columns.update((name, np.empty(total, dtype))
                           for name, dtype in PREDICTION_DTYPES.items())
        # Files of one stage share the image order: the sort is for files that do not.
        elif not (np.array_equal(ids, reference[1])
                  or np.array_equal(np.sort(ids), reference[2])):
            raise ContractError(
                f"members {reference[0]} and {member_id} have predictions on different "
                "image sets; rerun pie_dataset_gen.predictions for both")
        rows = slice(position * len(ids), (position + 1) * len(ids))
        columns["member"][rows] = position
        for name in schema.names:
            columns[name][rows] = table.column(name).to_numpy()
        del table
    return pd.DataFrame(columns, copy=False)
