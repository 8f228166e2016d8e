"""No path through a link: files under a workdir are reached only inside it.

A workdir is untrusted (shared, downloaded, copied from a cluster): a folder or file
in it replaced by a symbolic link would make a stage read, write or delete outside
it, and a FIFO or device would hang or flood it. Every path the toolkit reads or
writes under a workdir `W` is checked here first (`checked`): from W's real path,
each part below it is looked at without following links, and a link, or anything
but a folder on the way, is one ContractError. What a read opens must be a regular
file (`kind="file"`) or a folder (`kind="folder"`).

The workdirs of a process are those it made a `Workdir` of (`guard`), so readers
and writers that take a bare path (`records.read_json`, `records.atomic_path`) find
the workdir holding it themselves; a path in no workdir (a report `--out`
elsewhere, a data folder) is the user's choice and is not checked. W itself may be
reached through a link: the user named it.

Lock files are opened with `open_lock`: created or opened as a regular file, never
through a link, never blocking on a FIFO. This module imports nothing heavy.
"""
import os
import stat
import threading

from pie.io import errors

RULE = "nothing in a workdir is read or written through a link"

_ROOTS = {}  # absolute path of a guarded workdir as named -> its real path
_ROOTS_LOCK = threading.Lock()


def guard(root):
    """Makes `root` a workdir whose paths are checked; returns its real path."""
    named = os.path.abspath(os.fspath(root))
    real = os.path.realpath(named)
    with _ROOTS_LOCK:
        _ROOTS[named] = real
        _ROOTS.setdefault(real, real)
    return real


def _below(path, prefix):
    """The parts of `path` below `prefix`, or None when it is not inside it."""
    if path == prefix:
        return []
    if not path.startswith(prefix.rstrip(os.sep) + os.sep):
        return None
    return [part for part in path[len(prefix):].split(os.sep) if part]


def workdir_of(path):
    """`(real root, named root, parts below it)` of the guarded workdir holding `path`,
    or None. The innermost workdir wins (a study inside another's folder is its own);
    found by walking up from `path`, however many workdirs the process has seen."""
    path = os.path.abspath(os.fspath(path))
    candidate = path
    while True:
        real = _ROOTS.get(candidate)
        if real is not None:
            return real, candidate, _below(path, candidate)
        parent = os.path.dirname(candidate)
        if parent == candidate:
            return None
        candidate = parent


def _kind_of(mode):
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def check_inside(root, path, kind=None):
    """Checks `path`, inside the workdir `root`, part by part; returns the path.

    From the workdir's real path down, a part that is a link, a part on the way
    that is not a folder, or (with `kind`) a last part that exists but is not a
    regular `"file"` / a `"folder"`, is a ContractError naming it. Parts that do not
    exist yet are fine (a write creates them).
    """
    real = os.path.realpath(os.fspath(root))
    named = os.path.abspath(os.fspath(root))
    absolute = os.path.abspath(os.fspath(path))
    parts = _below(absolute, named)
    if parts is None:
        named = real
        parts = _below(absolute, real)
    if parts is None:
        raise errors.ContractError(f"{path} lies outside the workdir {root}: {RULE}")
    return _walk(real, named, parts, kind)


def _walk(real, named, parts, kind):
    current, shown = real, named
    for position, part in enumerate(parts):
        current, shown = os.path.join(current, part), os.path.join(shown, part)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break
        except NotADirectoryError:
            raise errors.ContractError(f"{os.path.dirname(shown)} is not a folder")
        if stat.S_ISLNK(mode):
            raise errors.ContractError(f"{shown} is a symbolic link: {RULE}")
        last = position == len(parts) - 1
        if not last and not stat.S_ISDIR(mode):
            raise errors.ContractError(f"{shown} is {_kind_of(mode)}, not a folder")
        if last and kind == "file" and not stat.S_ISREG(mode):
            raise errors.ContractError(f"{shown} is {_kind_of(mode)}: only regular files "
                                       "are read")
        if last and kind == "folder" and not stat.S_ISDIR(mode):
            raise errors.ContractError(f"{shown} is {_kind_of(mode)}, not a folder")
    return os.path.join(named, *parts)


def checked(path, kind=None):
    """`path` checked when it lies in a guarded workdir (see check_inside); returned."""
    found = workdir_of(path)
    if found is not None:
        _walk(*found, kind)
    return path


def open_regular(path, mode="r", **kwargs):
    """Opens a file of a workdir for reading: checked, opened without following a
    link or blocking on a FIFO, and refused unless it is a regular file."""
    checked(path, "file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _require_regular(fd, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def _require_regular(fd, path):
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise errors.ContractError(f"{path} is {_kind_of(mode)}: only regular files are used")


def open_folder_lock(path):
    """The file descriptor of the folder `path`, to lock the folder itself (no lock
    file is left behind): never through a link, and only a folder."""
    checked(path, "folder")
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise errors.ContractError(f"cannot lock the folder {path}: {error.strerror}")


def open_lock(path):
    """The file descriptor of the lock file `path`, created when missing.

    Never through a link (O_NOFOLLOW, and the folders on the way checked when it lies
    in a workdir), never blocking on a FIFO (O_NONBLOCK), and only a regular file.
    """
    checked(path, "file")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if os.path.islink(path):
            raise errors.ContractError(f"{path} is a symbolic link: lock files are never "
                                       "opened through a link")
        if os.path.exists(path) and not os.path.isfile(path):
            raise errors.ContractError(f"{path} is {_kind_of(os.lstat(path).st_mode)}: a "
                                       "lock file must be a regular file")
        raise errors.ContractError(f"cannot open the lock file {path}: {error.strerror}")
    try:
        _require_regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd
