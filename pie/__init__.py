"""Shared library of the compression-forgetting toolkit.

tfmot's pruning API works only with Keras 2 (`tf_keras`). TensorFlow picks its
Keras flavour when it is first imported, so the switch is set here, in the one
place every stage imports before TensorFlow. Importing `pie` changes nothing else
but TensorFlow's C++ log level (also read when TensorFlow loads).
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"


# Quiet TensorFlow's C++ start-up messages (CUDA probing on CPU machines) unless
# the user asked for them (setdefault: a value already set wins). TensorFlow reads
# it once, when it loads, so it cannot wait for a stage to start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# Nothing else changes on import: the stages quiet the libraries' warnings when they
# run (pie.io.cli), and tfmot's Keras probe is cut where tfmot is loaded
# (pie.compress.tfmot_loader).
