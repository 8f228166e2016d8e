"""The seeded stratified train / eval split of the shipped image sets.

The same split as scikit-learn's `train_test_split(..., test_size=f, random_state=s,
stratify=labels)`: StratifiedShuffleSplit's algorithm (per-class counts by its
approximate hypergeometric mode, ties broken at random; each class's members
permuted; both sides permuted), on numpy's `RandomState(s)`. Why not scikit-learn
itself: importing it, with the scipy.stats it loads, takes about 1.2 s, which every
process loading mnist5k paid (each training worker, every stage) for a fixed
function of the labels. tests/test_data.py checks the two agree index for index.
"""
import math

import numpy as np


def _approximate_mode(class_counts, n_draws, rng):
    """Draws per class summing to `n_draws`, in proportion to `class_counts`: the
    floors, then one more for the largest remainders (ties drawn from `rng`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    counts = np.floor(continuous)
    missing = int(n_draws - counts.sum())
    if missing > 0:
        remainder = continuous - counts
        for value in np.sort(np.unique(remainder))[::-1]:
            (candidates,) = np.where(remainder == value)
            added = min(len(candidates), missing)
            counts[rng.choice(candidates, size=added, replace=False)] += 1
            missing -= added
            if missing == 0:
                break
    return counts.astype(int)


def split_indices(labels, eval_fraction, seed):
    """(train indices, eval indices) of a stratified split of `labels`: ceil(fraction
    x n) eval examples, each class in proportion, both lists in a seeded random order.

    Raises ValueError for labels that are not one finite label per example, a seed
    that is not an integer, a class with fewer than 2 examples, or a side that would
    have fewer examples than there are classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one label per example (1-d), got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise ValueError("labels hold NaN or infinite values")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction}")
    n_eval = math.ceil(eval_fraction * len(labels))
    n_train = len(labels) - n_eval
    classes, inverse, class_counts = np.unique(labels, return_inverse=True,
                                               return_counts=True)
    if class_counts.min() < 2:
        raise ValueError(f"classes {classes[class_counts < 2].tolist()} have fewer than 2 "
                         "examples: a stratified split needs 2 or more of each")
    if min(n_train, n_eval) < len(classes):
        raise ValueError(f"a split of {len(labels)} examples into {n_train} and {n_eval} "
                         f"cannot hold each of the {len(classes)} classes on both sides")
    by_class = np.split(np.argsort(inverse.reshape(-1), kind="stable"),
                        np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, n_train, rng)
    eval_counts = _approximate_mode(class_counts - train_counts, n_eval, rng)
    train, evaluation = [], []
    for members, n_class_train, n_class_eval in zip(by_class, train_counts, eval_counts):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:n_class_train])
        evaluation.extend(shuffled[n_class_train:n_class_train + n_class_eval])
    return rng.permutation(train), rng.permutation(evaluation)
