"""Shared library of the compression-forgetting toolkit.

tfmot's pruning API works only with Keras 2 (`tf_keras`). TensorFlow picks its
Keras flavour when it is first imported, so the switch is set here, in the one
place every stage imports before TensorFlow.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Quiet TensorFlow's C++ start-up messages (CUDA probing on CPU machines) unless
# the user asked for them; Python errors still surface as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# Library noise (deprecation notices, retracing warnings) is dropped for stages run
# from any entry point, the Python API included.
from pie.io import progress as _progress  # noqa: E402

_progress.quiet_libraries()
