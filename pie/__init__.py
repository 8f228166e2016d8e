"""Shared library of the compression-forgetting toolkit.

tfmot's pruning API works only with Keras 2 (`tf_keras`). TensorFlow picks its
Keras flavour when it is first imported, so the switch is set here, in the one
place every stage imports before TensorFlow.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def _skip_tfmot_keras_probe():
    """tfmot's prune_registry looks for `keras.src.engine` / `keras.engine` (the Keras
    2.13 layout) before its own fallback. Under Keras 3 neither module exists, so
    the probe always fails, but only after importing all of Keras 3, with
    matplotlib and scikit-learn: 1.5 s in every stage that loads tfmot. Marking the
    two names absent makes the probe fail at once, with the same result (its
    fallback; `prune_registry.base_layer` is None either way)."""
    import importlib.metadata
    import sys
    try:
        major = int(importlib.metadata.version("keras").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return
    if major >= 3:
        for name in ("keras.src.engine", "keras.engine"):
            sys.modules.setdefault(name, None)


_skip_tfmot_keras_probe()
# Quiet TensorFlow's C++ start-up messages (CUDA probing on CPU machines) unless
# the user asked for them; Python errors still surface as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# Library noise (deprecation notices, retracing warnings) is dropped for stages run
# from any entry point, the Python API included.
from pie.io import progress as _progress  # noqa: E402

_progress.quiet_libraries()
