"""JSON from a workdir, bounded: a size limit and a nesting-depth limit before parsing.

The JSON files of a workdir (classes.json, dataset.json, stamps, meta.json, --force
journals) are small; a huge one would fill memory and a deeply nested one (`[[[[...`)
would make the parser raise RecursionError, a traceback instead of one line. Both
are checked on the text before `json.loads` sees it. This module imports nothing
heavy (the journal uses it before any stage code loads).
"""
import json
import re

import numpy as np

from pie.io import errors

# The largest JSON file read: a classes.json of 22,000 long names and a stamp listing
# thousands of outputs are far below it.
MAX_BYTES = 16 * 1024 * 1024
# Deepest nesting of objects and lists: the toolkit's files nest at most 4 deep.
MAX_DEPTH = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def depth(text):
    """The deepest nesting of lists and objects in the JSON `text`; brackets inside
    strings do not count. Strings are cut out by a regular expression and the rest
    counted with numpy: no Python loop over a large text."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    bare = _STRING.sub("", text).encode("utf-8")
    steps = _STEP[np.frombuffer(bare, np.uint8)].astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def loads(text, where, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH):
    """The JSON value of `text` (str or bytes) read from `where`; too large, too deep
    or broken JSON is one ContractError naming `where`."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise errors.ContractError(
            f"{where} is {size} bytes: JSON files of a workdir are read up to {max_bytes}")
    deepest = depth(text)
    if deepest > max_depth:
        raise errors.ContractError(
            f"{where} nests lists or objects {deepest} deep: at most {max_depth} are read")
    try:
        return json.loads(text)
    except RecursionError:  # (not reached below MAX_DEPTH; kept as a last guard)
        raise errors.ContractError(f"{where} nests too deep to read")
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise errors.ContractError(f"{where} is not readable JSON: {error}")


def read(handle, where, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH):
    """The JSON value of an open file, reading at most `max_bytes` + 1 of it."""
    text = handle.read(max_bytes + 1)
    return loads(text, where, max_bytes, max_depth)
