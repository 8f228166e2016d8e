"""Split sizes (and label facts) counted once per data file and kept in a small JSON file.

Counting the records of ImageNet's 1,024 training shards means reading them all, so
it is done once: per file the scan's result is stored with the file's size and
modification time, and reused while both are unchanged. The cache lives next to the
data (`<folder>/pie_sizes.json`) when that folder is writable, else in the workdir
(`W/data_sizes.json`, one entry per data folder). Everything goes through
`tf.io.gfile`, so folders on object storage (gs://, ram://) work the same.
"""
import json
import os

import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

CACHE_NAME = "pie_sizes.json"
WORKDIR_CACHE_NAME = "data_sizes.json"
VERSION = 1


def file_stamp(path):
    """What identifies a file's content well enough: its size and modification time."""
    stat = tf.io.gfile.stat(path)
    return {"bytes": int(stat.length), "mtime_ns": int(stat.mtime_nsec)}


def _read(path):
    try:
        if not tf.io.gfile.exists(path):
            return {}
        with tf.io.gfile.GFile(path, "r") as f:
            data = json.load(f)
    except (tf.errors.OpError, ValueError, OSError):
        return {}  # a broken cache is counted again, never trusted
    return data if isinstance(data, dict) and data.get("version") == VERSION else {}


def _write(path, data):
    """Writes aside and renames; returns False where the folder is not writable."""
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
        elif workdir:
            shared = _read(os.path.join(workdir, WORKDIR_CACHE_NAME))
            self.entries = dict(shared.get("folders", {}).get(folder, {}))
        self.changed = False

    def get(self, path, stamp):
        entry = self.entries.get(os.path.basename(path))
        if entry and entry.get("stamp") == stamp:
            return entry
        return None

    def put(self, path, stamp, facts):
        self.entries[os.path.basename(path)] = dict(facts, stamp=stamp)
        self.changed = True

    def save(self):
        """Next to the data when writable, else in the workdir, else nowhere."""
        if not self.changed:
            return None
        local = os.path.join(self.folder, CACHE_NAME)
        if _write(local, {"version": VERSION, "files": self.entries}):
            return local
        if self.workdir and os.path.isdir(self.workdir):
            path = os.path.join(self.workdir, WORKDIR_CACHE_NAME)
            shared = _read(path) or {"version": VERSION, "folders": {}}
            shared.setdefault("folders", {})[self.folder] = self.entries
            if _write(path, shared):
                return path
        return None


def write_entries(folder, entries):
    """For writers that know their files' facts already (the PIE subsets)."""
    cache = SizeCache.__new__(SizeCache)
    cache.folder, cache.workdir, cache.changed = folder, None, True
    cache.entries = {}
    for path, facts in entries.items():
        cache.put(path, file_stamp(path), facts)
    return cache.save()
