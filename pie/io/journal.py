"""A `--force` run changes nothing unless it succeeds: the undo journal of one run.

Without --force a stage writes only missing or stale outputs, and each file is
replaced atomically (records.atomic_path). With --force it rewrites outputs that
are fine, so a run that fails halfway (bad input found late, a bug, kill -9) would
leave some outputs new and some old. Inside `transaction(workdir)` every write
through this module's file operations is undoable:

- before a file or folder of the workdir is replaced or removed, the original is
  kept in `W/.force-<host>@<pid>/` (a hard link, so no bytes are copied) and the
  journal there lists it; a file or folder the run creates is listed too;
- on success the journal and its backups are dropped; on an exception every listed
  path gets its original back and what the run created is removed;
- a killed run leaves its journal: the next stage started in the workdir rolls it
  back (`recover`, from cli.tidy_workdir) and names what it restored in one line.

The journal is workdir content, so untrusted: rollback touches only paths inside
the workdir, never follows a link, takes backups only from the journal's own
folder, and a journal it cannot read is one ContractError. This module imports
nothing heavy (cli uses it before any stage code runs).
"""
import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import socket
import stat
import threading
import time

from pie.io import bounded_json, errors, safe_paths

PREFIX = ".force-"
JOURNAL = "journal"
FORMAT = 1
# `<host>@<pid>`: whose file it is, so a later run can tell a killed writer's
# leftover from a live one's (shards share a workdir).
OWNER = re.compile(r"^(?P<host>[^@/]*)@(?P<pid>\d+)")
# A leftover of another host is taken for a killed run's after a day.
STALE_AFTER_S = 24 * 3600
_BACKUP_NAME = re.compile(r"^[0-9]+$")
_OPS = ("created", "folder", "scratch", "replaced")
# A journal lists each path a run touched once (a line of about 100 bytes each).
MAX_JOURNAL_BYTES = 64 * 1024 * 1024


def owner():
    """This process as `<host>@<pid>`."""
    return f"{socket.gethostname()}@{os.getpid()}"


def owner_is_gone(tag, path, now=None):
    """Whether the writer named by `tag` (`<host>@<pid>...`) no longer runs.

    A writer of this host is gone when its pid is; one of another host (or an
    unknown one) when `path` is older than STALE_AFTER_S.
    """
    match = OWNER.match(tag)
    if match and match["host"] == socket.gethostname():
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            pass
        return False
    return (now or time.time()) - os.lstat(path).st_mtime > STALE_AFTER_S


def fsync(path, directory=False):
    """Flushes a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Run:
    """The journal of one --force run: where it lives and what it has touched."""

    def __init__(self, workdir):
        self.root = os.path.realpath(workdir)
        self.folder = os.path.join(self.root, PREFIX + owner())
        self.touched = set()
        self.count = 0
        self.lock = threading.Lock()
        if os.path.lexists(self.folder):  # a dead run of a reused pid
            rollback(self.root, self.folder)
        os.mkdir(self.folder)
        self.handle = open(os.path.join(self.folder, JOURNAL), "a")
        self._append({"journal": FORMAT})
        fsync(self.root, directory=True)

    def relative(self, path):
        """`path` relative to the workdir, or None when it lies outside it."""
        path = os.path.abspath(path)
        parent = os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([self.root, parent]) != self.root:
            return None
        relative = os.path.relpath(os.path.join(parent, os.path.basename(path)), self.root)
        return None if relative.split(os.sep)[0] in (".", "..", os.path.basename(self.folder)) \
            else relative

    def _append(self, entry):
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def note(self, path, op):
        """Lists `path` (about to change) once; keeps the original when there is one."""
        relative = self.relative(path)
        if relative is None:
            return
        with self.lock:
            if relative in self.touched:
                return
            self.touched.add(relative)
            entry = {"op": op, "path": relative}
            if op == "replaced":
                if not os.path.lexists(path):
                    entry["op"] = "created"
                else:
                    self.count += 1
                    backup = os.path.join(self.folder, str(self.count))
                    _keep(path, backup)
                    fsync(self.folder, directory=True)
                    entry["backup"] = str(self.count)
            self._append(entry)

    def close(self):
        self.handle.close()


def _keep(path, backup):
    """Keeps `path` as `backup` (same folder tree): a hard link, a move for a folder."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.rename(path, backup)
        return
    try:
        os.link(path, backup, follow_symlinks=False)
    except OSError:  # a file system without hard links
        shutil.copy2(path, backup, follow_symlinks=False)


_ACTIVE = None
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def transaction(workdir, enabled=True):
    """Makes the writes of the block undoable (see the module's docstring).

    Entered by cli for every stage run with --force set; inside a transaction a
    second one joins it. Only an exception counts as failure: the writes are
    undone and the exception goes on.
    """
    global _ACTIVE
    if not enabled or not workdir or _ACTIVE is not None or not os.path.isdir(workdir):
        yield
        return
    run = _Run(workdir)
    with _ACTIVE_LOCK:
        _ACTIVE = run
    try:
        yield
    except BaseException as error:
        if isinstance(error, SystemExit) and error.code in (None, 0):
            _finish(run, commit=True)
        else:
            _finish(run, commit=False)
        raise
    _finish(run, commit=True)


def _finish(run, commit):
    global _ACTIVE
    with _ACTIVE_LOCK:
        _ACTIVE = None
    run.close()
    if commit:
        # Without the journal the run is done: a kill now leaves only backups to drop.
        os.remove(os.path.join(run.folder, JOURNAL))
        shutil.rmtree(run.folder)
    else:
        rollback(run.root, run.folder)


def forced(function):
    """Decorates a stage's Python `run(workdir, ..., force=False)`: force=True runs it
    in a transaction of its workdir (joining the one cli entered, when any)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with transaction(bound.arguments.get("workdir"), bool(bound.arguments.get("force"))):
            return function(*args, **kwargs)
    return wrapper


# ------------------------------------------------------------------ file operations


def replace(source, path):
    """os.replace(source, path), undoable inside a transaction. Like every operation
    here, refused when `path` lies in a workdir through a link (safe_paths)."""
    safe_paths.checked(path, "file")
    if _ACTIVE is not None:
        _ACTIVE.note(path, "replaced")
    os.replace(source, path)


def remove(path):
    """Removes a file, undoably inside a transaction (the original is kept)."""
    safe_paths.checked(path, "file")
    if _ACTIVE is not None:
        _ACTIVE.note(path, "replaced")
    if os.path.lexists(path):
        os.remove(path)


def replace_folder(source, path):
    """Puts folder `source` in the place of folder `path` (removed when there);
    undoable inside a transaction (the old folder is kept whole)."""
    safe_paths.checked(source, "folder")
    safe_paths.checked(path, "folder")
    if _ACTIVE is not None:
        _ACTIVE.note(path, "replaced")  # moves the old folder into the journal
    if os.path.lexists(path):
        _discard(path)
    os.replace(source, path)


def makedirs(path, scratch=False):
    """os.makedirs(path, exist_ok=True); inside a transaction, folders it creates are
    listed: removed at rollback when empty, or whole when `scratch` (a staging folder).
    A linked folder on the way in a workdir is refused before anything is made."""
    safe_paths.checked(path, "folder")
    if _ACTIVE is not None:
        missing, folder = [], os.path.abspath(path)
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for position, folder in enumerate(reversed(missing)):
            last = position == len(missing) - 1
            _ACTIVE.note(folder, "scratch" if scratch and last else "folder")
    os.makedirs(path, exist_ok=True)


# ------------------------------------------------------------------------ rollback


def _broken(folder, why):
    return errors.ContractError(
        f"{os.path.join(folder, JOURNAL)} is a broken --force journal ({why}); check the "
        f"files it lists, then remove {folder}")


def _read_entries(root, folder):
    """The journal's entries, checked: known ops, paths inside the workdir."""
    path = os.path.join(folder, JOURNAL)
    if os.path.islink(path) or not os.path.isfile(path):
        raise _broken(folder, "no journal file")
    try:
        with safe_paths.open_regular(path, encoding="utf-8") as handle:
            text = handle.read(MAX_JOURNAL_BYTES + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise _broken(folder, str(error))
    if len(text) > MAX_JOURNAL_BYTES:
        raise _broken(folder, f"larger than {MAX_JOURNAL_BYTES} bytes")
    lines = text.split("\n")
    # A kill during an append cuts only the last line: its change had not started.
    complete = lines[:-1]
    entries = []
    for number, line in enumerate(complete, 1):
        try:  # (bounded: a deeply nested line is not JSON here, never a RecursionError)
            entry = bounded_json.loads(line, path)
        except errors.ContractError:
            raise _broken(folder, f"line {number} is not JSON")
        if number == 1:
            if entry != {"journal": FORMAT}:
                raise _broken(folder, "line 1 is not a journal header")
            continue
        if not isinstance(entry, dict) or entry.get("op") not in _OPS:
            raise _broken(folder, f"line {number} is not a journal entry")
        relative, backup = entry.get("path"), entry.get("backup")
        if not isinstance(relative, str) or _outside(root, relative):
            raise _broken(folder, f"line {number} names a path outside the workdir")
        if (entry["op"] == "replaced") != (backup is not None) or (
                backup is not None and not (isinstance(backup, str)
                                            and _BACKUP_NAME.match(backup))):
            raise _broken(folder, f"line {number} has a wrong backup")
        if backup is not None and not _plain(os.path.join(folder, backup)):
            raise _broken(folder, f"line {number}'s backup is a link or not a regular file: "
                                  "a journal never puts a link back")
        entries.append(entry)
    if not complete:
        raise _broken(folder, "no journal header")
    return entries


def _plain(path):
    """Whether `path` (a backup) is missing, a regular file, or a folder holding only
    regular files and folders: what a run backs up, never a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True  # restored by an interrupted rollback already
    if stat.S_ISREG(mode):
        return True
    if not stat.S_ISDIR(mode):
        return False
    for parent, folders, names in os.walk(path, followlinks=False):
        for name in folders + names:
            mode = os.lstat(os.path.join(parent, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return False
    return True


def _outside(root, relative):
    """Whether `relative` could lead outside the workdir or into a journal."""
    parts = relative.split("/")
    if (not relative or os.path.isabs(relative) or any(
            part in ("", ".", "..") for part in parts) or parts[0].startswith(PREFIX)):
        return True
    parent = os.path.realpath(os.path.join(root, *parts[:-1]))
    return os.path.commonpath([root, parent]) != root


def _discard(path):
    """Removes a file, a link or a folder at `path` without following links."""
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.remove(path)
    else:
        shutil.rmtree(path)


def rollback(root, folder):
    """Undoes the journal in `folder`; returns (restored, removed) workdir paths."""
    if not os.path.lexists(os.path.join(folder, JOURNAL)):
        # Committed (the journal goes first), or killed before the header: no change
        # of the run is listed, so none was made.
        _discard(folder)
        return [], []
    restored, removed = [], []
    for entry in reversed(_read_entries(root, folder)):
        path = os.path.join(root, *entry["path"].split("/"))
        if _outside(root, entry["path"]):  # a folder on the way became a link
            continue
        op = entry["op"]
        if op == "replaced":
            backup = os.path.join(folder, entry["backup"])
            if not os.path.lexists(backup):
                continue  # restored by an interrupted rollback already
            if os.path.isdir(backup) and not os.path.islink(backup):
                if os.path.lexists(path):
                    _discard(path)
                os.rename(backup, path)
            else:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                os.replace(backup, path)
            restored.append(entry["path"])
        elif op == "created" or op == "scratch":
            if os.path.lexists(path):
                _discard(path)
                removed.append(entry["path"])
        elif os.path.isdir(path) and not os.path.islink(path):  # "folder": when empty
            with contextlib.suppress(OSError):
                os.rmdir(path)
    _discard(folder)
    with contextlib.suppress(OSError):
        fsync(root, directory=True)
    return restored[::-1], removed[::-1]


def recover(workdir):
    """Rolls back the journals killed --force runs left in `workdir`.

    Returns one line per rolled-back run, naming what it restored and removed.
    """
    root = os.path.realpath(workdir)
    lines = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not name.startswith(PREFIX):
            continue
        if os.path.islink(folder) or not os.path.isdir(folder):
            raise _broken(folder, "not a folder")
        tag = name[len(PREFIX):]
        if _ACTIVE is not None and _ACTIVE.folder == folder:
            continue  # this process's own run (a stage called inside a stage)
        if tag != owner() and not owner_is_gone(tag, folder):
            continue  # a live run's (shards share a workdir)
        restored, removed = rollback(root, folder)
        if restored or removed:
            lines.append(
                f"rolled back the killed --force run {tag}: restored "
                f"{', '.join(restored) or 'nothing'}; removed {', '.join(removed) or 'nothing'}")
    return lines
