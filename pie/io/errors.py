"""Errors that mean "bad input": the user can fix the command or its files.

Stages report these as one `error:` line and exit code 2 (pie.io.cli.run); any other
exception is a bug and keeps its traceback. This module imports nothing heavy, so
reporting bad input never waits for TensorFlow to load.
"""
import re


class InputError(ValueError):
    """Base of every error a user can fix by changing the input."""


class UsageError(InputError):
    """Bad command-line input."""


class ContractError(InputError):
    """A stage's input file breaks its documented contract."""


class DataError(InputError):
    """A dataset that cannot be loaded as asked."""


class ModelError(InputError):
    """A model that cannot be built as asked."""


class PruningError(InputError):
    """A pruning setting that cannot work, or a model that missed its target."""


# --------------------------------------------------------- libraries' bad-data errors

# TensorFlow's decoration of op errors: `{{function_node ...}}`, `[[{{node ...}}]]`,
# ` [Op:IteratorGetNext] name: `.
# ... and tf.data's wrapper of an error raised in a map function (how it names the
# transformation and the iterator is its business, not the user's).
_TF_DECORATION = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[\[.*?\]\]|\s*\[Op:[^\]]*\].*$"
                            r"|Error in user-defined function passed to \S+ transformation "
                            r"with iterator: \S+: ")
# What only broken data (never a bug of the toolkit) makes TensorFlow report while a
# dataset is read: an image that does not decode, a record that fails its checksum.
_BAD_DATA_MARKERS = ("DecodeImage", "DecodePng", "DecodeJpeg", "DecodeGif", "DecodeBmp",
                     "Invalid PNG", "Invalid JPEG", "corrupted record", "truncated record")


def first_line(error):
    """A library exception's message as one plain line, without TensorFlow's op trace."""
    text = getattr(error, "message", None) or str(error)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = _TF_DECORATION.sub("", lines[0]).strip() if lines else ""
    return line or type(error).__name__


def from_library(error):
    """The InputError a library's exception stands for, or None (then it is a bug).

    Images are decoded while a dataset streams (tf.data), after every file was
    checked for its layout: a corrupt image found then is bad input too.
    """
    kind = type(error)
    if kind.__module__.startswith("tensorflow") and kind.__name__ in (
            "InvalidArgumentError", "DataLossError"):
        text = str(error)
        if any(marker in text for marker in _BAD_DATA_MARKERS):
            return DataError(f"the data holds a corrupt image or record: {first_line(error)}")
    return None
