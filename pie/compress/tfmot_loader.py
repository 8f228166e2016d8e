"""Loads tensorflow_model_optimization (tfmot) without its 2-second Keras 3 probe.

Every module of the toolkit that needs tfmot gets it from `load()`.
"""
import pie  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def skip_keras_probe():
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


def load():
    """The tfmot package, imported once the probe is cut."""
    skip_keras_probe()
    import tensorflow_model_optimization as tfmot
    return tfmot
