"""Split sizes (and label facts) counted once per data file and kept in a small JSON file.

Counting the records of ImageNet's 1,024 training shards means reading them all, so
it is done once: per file the scan's result is stored with the file's size and
modification time, and reused while both are unchanged.

A cache is written inside the workdir or the user's cache folder, never into a data
folder the toolkit does not own (a `dataset.json` naming `tfrecord:<folder>` must not
make a stage write there): next to the data (`<folder>/pie_sizes.json`) only when
the folder lies inside a workdir of this process with no link on the way (the PIE
subsets under `W/pie/tfrecords`); else in the workdir (`W/data_sizes.json`, one
entry per data folder); else in the user's cache folder (`$PIE_CACHE_DIR`, else
`$XDG_CACHE_HOME/pie-forgetting`, else `~/.cache/pie-forgetting`, the same file
name). A `pie_sizes.json` already in a data folder is still read. Everything goes
through `tf.io.gfile`, so folders on object storage (gs://, ram://) work the same.
"""
import contextlib
import json
import os

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from pie.io import bounded_json, errors, safe_paths

CACHE_NAME = "pie_sizes.json"
WORKDIR_CACHE_NAME = "data_sizes.json"
VERSION = 1


def file_stamp(path):
    """What identifies a file's content well enough: its size and modification time."""
    stat = tf.io.gfile.stat(path)
    return {"bytes": int(stat.length), "mtime_ns": int(stat.mtime_nsec)}


def user_cache_folder():
    """Where caches of data outside any workdir go: the user's own cache folder."""
    folder = os.environ.get("PIE_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        folder = os.path.join(base, "pie-forgetting")
    return folder


def _in_workdir(folder):
    """Whether the data folder lies inside a workdir of this process, no link on the
    way: the one place a cache is written next to the data."""
    if "://" in folder or safe_paths.workdir_of(folder) is None:
        return False
    try:
        safe_paths.checked(folder, "folder")
    except errors.ContractError:
        return False
    return True


def _read(path):
    try:
        if "://" not in path:
            safe_paths.checked(path, "file")  # a workdir's cache: never through a link
            if os.path.lexists(path) and not os.path.isfile(path):
                return {}  # (a FIFO or a folder is not opened)
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path, "r") as f:
            data = bounded_json.read(f, path)
    except (tf.errors.OpError, errors.ContractError, ValueError, OSError):
        return {}  # a broken cache is counted again, never trusted
    return data if isinstance(data, dict) and data.get("version") == VERSION else {}


def _write(path, data):
    """Writes aside and renames; returns False where the folder is not writable."""
    if "://" not in path and safe_paths.workdir_of(path) is not None:
        # Inside a workdir: an atomic, checked write (a linked cache or folder is one
        # error line), undone with the rest of a failed --force run.
        from pie.io import records
        try:
            records.write_json(path, data)
            return True
        except OSError:
            return False
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return True
    except (tf.errors.OpError, OSError):
        try:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        except (tf.errors.OpError, OSError):
            pass
        return False


class SizeCache:
    """Per-file scan results of one data folder."""

    def __init__(self, folder, workdir=None):
        self.folder = folder
        self.workdir = workdir
        self.entries = {}
        local = _read(os.path.join(folder, CACHE_NAME))
        if local.get("files"):
            self.entries = dict(local["files"])
        else:
            for shared in self._shared_paths():
                found = _read(shared).get("folders", {}).get(folder)
                if isinstance(found, dict):
                    self.entries = dict(found)
                    break
        self.changed = False

    def _shared_paths(self):
        """The caches of many data folders: the workdir's, else the user's."""
        if self.workdir and os.path.isdir(self.workdir):
            return [os.path.join(self.workdir, WORKDIR_CACHE_NAME)]
        return [os.path.join(user_cache_folder(), WORKDIR_CACHE_NAME)]

    def get(self, path, stamp):
        entry = self.entries.get(os.path.basename(path))
        if entry and entry.get("stamp") == stamp:
            return entry
        return None

    def put(self, path, stamp, facts):
        self.entries[os.path.basename(path)] = dict(facts, stamp=stamp)
        self.changed = True

    def save(self):
        """Next to the data inside a workdir, else in the workdir, else in the user's
        cache folder; returns where (None when nowhere was writable)."""
        if not self.changed:
            return None
        if _in_workdir(self.folder):
            local = os.path.join(self.folder, CACHE_NAME)
            if _write(local, {"version": VERSION, "files": self.entries}):
                return local
        for path in self._shared_paths():
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            shared = _read(path) or {"version": VERSION, "folders": {}}
            shared.setdefault("folders", {})[self.folder] = self.entries
            if _write(path, shared):
                return path
        return None


def write_entries(folder, entries):
    """For writers that know their files' facts already (the PIE subsets, inside W)."""
    cache = SizeCache.__new__(SizeCache)
    cache.folder, cache.workdir, cache.changed = folder, None, True
    cache.entries = {}
    for path, facts in entries.items():
        cache.put(path, file_stamp(path), facts)
    return cache.save()
