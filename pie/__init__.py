"""Shared library of the compression-forgetting toolkit.

tfmot's pruning API works only with Keras 2 (`tf_keras`). TensorFlow picks its
Keras flavour when it is first imported, so the switch is set here, in the one
place every stage imports before TensorFlow. Importing `pie` changes nothing else
but two settings TensorFlow also reads when it loads: its C++ log level, and its
oneDNN kernels, turned on for every x86 CPU.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"


# Quiet TensorFlow's C++ start-up messages (CUDA probing on CPU machines) unless
# the user asked for them (setdefault: a value already set wins). TensorFlow reads
# it once, when it loads, so it cannot wait for a stage to start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# TensorFlow turns its oneDNN CPU kernels on by itself only on newer x86 CPUs (AVX-512
# VNNI and up); on an AVX2 CPU the embedded study trained 1.8 times slower on Eigen's
# kernels (docs/benchmarks.md). A value already set wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# Nothing else changes on import: the stages quiet the libraries' warnings when they
# run (pie.io.cli), and tfmot's Keras probe is cut where tfmot is loaded
# (pie.compress.tfmot_loader).
