"""A sparsity level's check, without TensorFlow: the training stage's flags are
checked with it before pie.compress.pruning (tfmot) loads."""
from pie.io import errors


def validate_sparsity(value):
    if not 0.0 <= value < 1.0:
        raise errors.PruningError(f"sparsity must be in [0, 1), got {value:g}")
