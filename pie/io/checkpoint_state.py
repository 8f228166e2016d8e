"""A member's TensorFlow checkpoint state, checked before any restore or save.

`<member>/ckpt/checkpoint` is a text proto naming the checkpoint to restore
(`model_checkpoint_path`) and those kept (`all_model_checkpoint_paths`, whose files
`tf.train.CheckpointManager` deletes on its next save). It is workdir content, so
untrusted: an absolute or `..` path there would restore weights from elsewhere and
delete files outside the workdir. Before TensorFlow reads it, `check` allows only
names of files inside the member's `ckpt/` folder (plain names, as TensorFlow
writes them), only the fields TensorFlow writes, and a folder holding only regular
files (no link, no FIFO: folders a killed save left are not read). This module imports nothing heavy.
"""
import os
import re
import stat

from pie.io import errors, safe_paths

STATE_NAME = "checkpoint"
MAX_BYTES = 64 * 1024
PATH_FIELDS = ("model_checkpoint_path", "all_model_checkpoint_paths")
NUMBER_FIELDS = ("all_model_checkpoint_timestamps", "last_preserved_timestamp")
_LINE = re.compile(r'^(?P<key>[a-z_]+)\s*:\s*(?:"(?P<text>[^"\\]*)"|(?P<number>[-+0-9.eE]+))$')
# What TensorFlow names a checkpoint: `ckpt-<n>` (CheckpointManager), plain names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _problem(ckpt_dir, why):
    return errors.ContractError(
        f"{os.path.join(ckpt_dir, STATE_NAME)} is not a checkpoint state this toolkit "
        f"restores ({why}); remove {ckpt_dir} to train the member again from its start")


def parse(text, ckpt_dir):
    """{field: [values]} of a checkpoint state's text, every line checked."""
    fields = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if not match or match["key"] not in PATH_FIELDS + NUMBER_FIELDS:
            raise _problem(ckpt_dir, f"line {number} is not a field TensorFlow writes")
        if (match["key"] in PATH_FIELDS) != (match["text"] is not None):
            raise _problem(ckpt_dir, f"line {number} has a value of the wrong kind")
        fields.setdefault(match["key"], []).append(
            match["text"] if match["text"] is not None else match["number"])
    return fields


def check(ckpt_dir):
    """Fails (ContractError) unless `ckpt_dir` is missing or holds a checkpoint state
    that names only checkpoints inside it, whose files are there, and no entry but
    regular files. Called right before tf.train.CheckpointManager opens the folder."""
    ckpt_dir = os.path.abspath(os.fspath(ckpt_dir))
    safe_paths.checked(ckpt_dir, "folder")
    try:
        mode = os.lstat(ckpt_dir).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise errors.ContractError(f"{ckpt_dir} is not a folder")
    names = os.listdir(ckpt_dir)
    for name in names:
        mode = os.lstat(os.path.join(ckpt_dir, name)).st_mode
        # (a folder: the `<name>_temp` of a save a kill interrupted, never read)
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise _problem(ckpt_dir, f"{name} is a link or not a regular file: a checkpoint "
                                     "is read only from files of its own folder")
    if STATE_NAME not in names:
        return
    with safe_paths.open_regular(os.path.join(ckpt_dir, STATE_NAME), "rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise _problem(ckpt_dir, f"larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _problem(ckpt_dir, "not text")
    fields = parse(text, ckpt_dir)
    latest = fields.get("model_checkpoint_path", [])
    if len(latest) > 1:
        raise _problem(ckpt_dir, "model_checkpoint_path given twice")
    for key in PATH_FIELDS:
        for value in fields.get(key, []):
            if not _NAME.match(value):
                raise _problem(ckpt_dir, f"{key} {value!r} is not the name of a file in "
                                         f"{ckpt_dir}: only relative names inside it")
    for value in latest:
        if value + ".index" not in names:
            raise _problem(ckpt_dir, f"model_checkpoint_path {value!r} names a checkpoint "
                                     "whose files are missing")
