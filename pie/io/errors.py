"""Errors that mean "bad input": the user can fix the command or its files.

Stages report these as one `error:` line and exit code 2 (pie.io.cli.run); any other
exception is a bug and keeps its traceback. This module imports nothing heavy, so
reporting bad input never waits for TensorFlow to load.
"""


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
