"""Progress of long loops, and the one place that quiets the libraries' noise.

Every long loop of a stage (members, images, corruptions, seeds, epochs) reports
through `Progress`: one line per step on stderr, with the count, the rate and an
ETA from the average time per unit so far. Results and summaries stay on stdout,
so `stage > results.txt` keeps them apart from progress.

`quiet_libraries()` drops what TensorFlow, tfds and Keras print that says nothing
about the user's study (INFO lines, deprecation notices, retracing warnings). It
runs when `pie` is imported, so stages are as quiet from a shell, `run.sh` or the
Python API; `PIE_VERBOSE=1` keeps everything.
"""
import logging
import os
import sys
import time
import warnings


def format_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """`message | label done/total, rate/s, ETA` lines on stderr."""

    def __init__(self, total_units, label, stream=None):
        if total_units < 0:
            raise ValueError(f"total units must be >= 0, got {total_units}")
        self.total = total_units
        self.done = 0
        self.label = label
        self.stream = stream
        self.start = time.time()

    def rate(self):
        elapsed = time.time() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self):
        remaining = max(self.total - self.done, 0)
        rate = self.rate()
        return remaining / rate if rate > 0 else 0.0

    def line(self, message):
        rate = self.rate()
        rate_text = f"{rate:.3g}/s" if rate >= 1 else f"{60 * rate:.3g}/min"
        return (f"{message} | {self.label} {self.done}/{self.total}, {rate_text}, "
                f"ETA {format_seconds(self.eta_seconds())}")

    def advance(self, units, message):
        self.done += units
        print(self.line(message), file=self.stream or sys.stderr, flush=True)


# Warnings that libraries raise on every run and a user cannot act on.
_NOISY_WARNINGS = (
    r".*is deprecated and will be removed.*",
    r".*tf\.lite\.Interpreter is deprecated.*",
    r".*retracing.*",
    r".*`build\(\)` was called on layer.*",
)
_NOISY_LOGGERS = ("tensorflow", "tensorflow_datasets", "absl", "h5py", "matplotlib")


def _project_info_only(record):
    """Keeps warnings and errors, and INFO lines from this project's own code."""
    return record.levelno >= logging.WARNING or "site-packages" not in record.pathname


# Messages of TensorFlow's logger that report its own tuning, not the user's study.
_NOISY_TENSORFLOW_MESSAGES = ("retracing", "is slow compared to the batch time")


def _no_retracing(record):
    message = record.getMessage()
    return not any(noise in message for noise in _NOISY_TENSORFLOW_MESSAGES)


def quiet_libraries():
    """Silences the libraries' routine output (idempotent); PIE_VERBOSE=1 disables it."""
    if os.environ.get("PIE_VERBOSE") == "1":
        return
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if name == "tensorflow":  # retracing and slow-callback notices: warnings of this logger
            logger.addFilter(_no_retracing)
        elif name != "absl":
            logger.setLevel(logging.ERROR)
    from absl import logging as absl_logging
    handler = absl_logging.get_absl_handler()
    if _project_info_only not in handler.filters:
        handler.addFilter(_project_info_only)
