"""Shared library of the compression-forgetting toolkit.

tfmot's pruning API works only with Keras 2 (`tf_keras`). TensorFlow picks its
Keras flavour when it is first imported, so the switch is set here, in the one
place every stage imports before TensorFlow.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def _skip_tfmot_keras_probe():
    """tfmot's prune_registry looks for `keras.src.engine` / `keras.engine` (the Keras
    2.13 layout) before its own fallback. The Keras 3 that TensorFlow installs has
    neither, so the probe fails, but only after importing all of Keras 3, with
    matplotlib and scikit-learn: 2 s in every stage that loads tfmot. Those of the
    two modules the installed Keras lacks are marked absent, so the probe fails at
    once with the same result (tfmot's fallback). Nothing is imported to decide."""
    import importlib.machinery
    import importlib.util
    import sys
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        return
    # Python's own finders over Keras's folders (zipped, namespace or compiled
    # installs included); they import nothing.
    finder, where = importlib.machinery.PathFinder, list(spec.submodule_search_locations)
    src = finder.find_spec("keras.src", where)
    if src is None or finder.find_spec(
            "keras.src.engine", list(src.submodule_search_locations or ())) is None:
        sys.modules.setdefault("keras.src.engine", None)
    if finder.find_spec("keras.engine", where) is None:
        sys.modules.setdefault("keras.engine", None)


_skip_tfmot_keras_probe()
# Quiet TensorFlow's C++ start-up messages (CUDA probing on CPU machines) unless
# the user asked for them; Python errors still surface as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# Library noise (deprecation notices, retracing warnings) is dropped for stages run
# from any entry point, the Python API included.
from pie.io import progress as _progress  # noqa: E402

_progress.quiet_libraries()
