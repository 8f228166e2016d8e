"""Sufficient input subsets by backward selection (Carter et al., "What made you do this?").

For one image and model, backward selection starts from the whole input and
removes one *feature* at a time: at every step, the feature whose removal leaves
the model's confidence in its original prediction (the class predicted on the
whole image) highest, i.e. lowers it least, until every feature is removed. A
removed feature takes `baseline` in every element it covers (0 in normalised
input units: the dataset mean).

Two uses of the removal order:

  sufficient subset (Carter et al.'s FindSIS, `sufficient_subsets`): for a
      threshold tau, the SIS is the smallest set of last-removed features that
      alone (everything else at the baseline) keeps the confidence in the
      predicted class >= tau: order[t+1:] for the last step t whose confidence
      after removal is still >= tau (every feature when none is). Removing any one
      more of its features drops the confidence below tau: backward selection
      removed the best one next and that already fell below. An image whose whole
      input is below tau has no SIS.
  ranking (Lost in Pruning's script, `selected_masks`): tau = 0 keeps nothing, so
      the last-removed `fraction` of the features (10% there) is taken instead.

A feature is a pixel across all its channels, or a k x k patch of pixels
(`patch=k`, k dividing the height and width); a 1-D input has one feature per
element. Each step scores every remaining feature of many images in one model
call (chunked), so an image of F features costs F (F + 1) / 2 forward passes,
batched.

    groups, count = sis.feature_groups((28, 28, 1), patch=2)   # 196 patches
    run = sis.backward_selection(predict_proba, x, groups, count)
    chosen, has_sis = sis.sufficient_subsets(run, threshold=0.9)  # (N, 196), (N,)
    masks = chosen[:, groups]                                  # (N, 784) bool
    ranked = sis.selected_masks(run.order, groups, fraction=0.1)  # the ranking use
"""
import collections
import math

import numpy as np

# informative_features.csv and informative_features_per_image.csv
# (robustness_tests.informative_features).
INFORMATIVE_FEATURES_COLUMNS = [
    "method", "sparsity", "iou_mean", "iou_std", "conf_own_mask", "conf_other_mask",
    "reference_conf_own_mask", "reference_conf_other_mask", "n_pairs", "images", "fraction",
    "selection", "patch", "features", "sis_threshold", "no_sis", "reference_no_sis",
    "features_kept_mean",
]
INFORMATIVE_FEATURES_PER_IMAGE_COLUMNS = [
    "method", "sparsity", "seed", "member_id", "reference_id", "image_id", "label",
    "predicted", "reference_predicted", "has_sis", "reference_has_sis", "features_kept",
    "reference_features_kept", "iou", "conf_own_mask", "conf_other_mask",
    "reference_conf_own_mask", "reference_conf_other_mask",
]
# Masked inputs built per model call stay under this many elements (float32: 64 MB).
CHUNK_ELEMENTS = 1 << 24


def patch_choices(height, width):
    """Patch sizes that divide both sides."""
    return [k for k in range(1, min(height, width) + 1) if height % k == 0 and width % k == 0]


def feature_groups(sample_shape, patch=1):
    """(group id of every input element, flattened; number of features).

    Images (H, W[, C]): pixel (h, w) belongs to patch (h // k, w // k), all
    channels together. Vectors (d,): one feature per element, patch must be 1.
    """
    shape = tuple(int(s) for s in sample_shape)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be an integer >= 1, got {patch!r}")
    if len(shape) == 1:
        if patch != 1:
            raise ValueError(f"patch={patch} needs an image; the input is a vector of "
                             f"{shape[0]} features: allowed: 1")
        return np.arange(shape[0]), shape[0]
    if len(shape) not in (2, 3):
        raise ValueError(f"inputs must be vectors or images (H, W[, C]), got shape {shape}")
    height, width = shape[:2]
    if height % patch or width % patch:
        raise ValueError(f"patch={patch} does not divide the {height}x{width} image; allowed: "
                         f"{', '.join(str(k) for k in patch_choices(height, width))}")
    rows = np.arange(height)[:, None] // patch
    cols = np.arange(width)[None, :] // patch
    pixel_group = rows * (width // patch) + cols
    channels = shape[2] if len(shape) == 3 else 1
    groups = np.repeat(pixel_group[..., None], channels, axis=-1).reshape(-1)
    return groups, (height // patch) * (width // patch)


# One backward selection per image: `order` (N, F) feature ids in the order removed;
# `values` (N, F) the confidence in the predicted class after each removal;
# `predicted` (N,) the class predicted on the whole input, `confidence` (N,) its
# probability there.
BackwardSelection = collections.namedtuple(
    "BackwardSelection", ["order", "values", "predicted", "confidence"])


def check_threshold(threshold):
    """tau is a number in [0, 1] (a probability)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def removal_order(predict_proba, x, groups, n_features, baseline=0.0,
                  chunk_elements=CHUNK_ELEMENTS):
    """Backward selection of every image: (N, F) feature ids in the order removed."""
    return backward_selection(predict_proba, x, groups, n_features, baseline,
                              chunk_elements).order


def backward_selection(predict_proba, x, groups, n_features, baseline=0.0,
                       chunk_elements=CHUNK_ELEMENTS):
    """Backward selection of every image: a `BackwardSelection`.

    `predict_proba` maps a float32 batch (n,) + sample shape to class
    probabilities (n, classes). Ties go to the lower feature id.
    """
    x = np.asarray(x, np.float32)
    n, sample_shape = len(x), x.shape[1:]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    if groups.shape != (d,):
        raise ValueError(f"groups must give one feature per input element ({d}), got "
                         f"{groups.shape}")
    full = predict_proba(x)
    predicted = np.argmax(full, axis=1)
    order = np.empty((n, n_features), np.int64)
    values = np.empty((n, n_features), np.float64)
    present = np.ones((n, n_features), bool)
    baseline = np.float32(baseline)
    # members[f]: the element positions of feature f
    members = np.zeros((n_features, d), bool)
    members[groups, np.arange(d)] = True
    for step in range(n_features):
        remaining = n_features - step
        candidates = np.nonzero(present)[1].reshape(n, remaining)  # ascending ids
        per_image = remaining * d
        images_per_call = max(1, chunk_elements // per_image)
        best = np.empty(n, np.int64)
        for first in range(0, n, images_per_call):
            rows = slice(first, min(n, first + images_per_call))
            cand = candidates[rows]  # (b, R)
            kept = present[rows][:, groups]  # (b, d): elements of features still present
            keep = kept[:, None, :] & ~members[cand]  # (b, R, d): and not the candidate
            masked = np.where(keep, flat[rows][:, None, :], baseline)
            probs = predict_proba(masked.reshape((-1,) + sample_shape))
            confidence = probs.reshape(cand.shape + (-1,))[
                np.arange(len(cand))[:, None], np.arange(remaining)[None, :],
                predicted[rows][:, None]]
            winner = np.argmax(confidence, axis=1)
            best[rows] = cand[np.arange(len(cand)), winner]
            values[rows, step] = confidence[np.arange(len(cand)), winner]
        order[:, step] = best
        present[np.arange(n), best] = False
    return BackwardSelection(order, values, predicted,
                             np.asarray(full, np.float64)[np.arange(n), predicted])


def sufficient_subsets(selection, threshold):
    """Carter et al.'s SIS of every image from its backward selection.

    Returns (chosen (N, F) bool: the SIS's features; has_sis (N,) bool). For an
    image whose whole-input confidence is >= `threshold`, the SIS is order[t+1:]
    with t the last removal step whose confidence after removal is >= threshold
    (all features when there is none; empty when even the fully masked input is).
    Images below the threshold have no SIS: has_sis False, no feature chosen.
    """
    threshold = check_threshold(threshold)
    order, values = np.asarray(selection.order), np.asarray(selection.values)
    n, n_features = order.shape
    has_sis = np.asarray(selection.confidence) >= threshold
    reaches = values >= threshold
    # last step still at or above the threshold; -1 when none is
    last = np.where(reaches.any(axis=1),
                    n_features - 1 - np.argmax(reaches[:, ::-1], axis=1), -1)
    chosen = np.zeros((n, n_features), bool)
    position = np.arange(n_features)[None, :]
    np.put_along_axis(chosen, order, position > last[:, None], axis=1)
    chosen[~has_sis] = False
    return chosen, has_sis


def selected_masks(order, groups, fraction):
    """(N, d) element masks of each image's last-removed ceil(fraction x F) features."""
    order = np.asarray(order)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    count = max(1, int(math.ceil(fraction * order.shape[1] - 1e-9)))
    chosen = np.zeros(order.shape, bool)
    np.put_along_axis(chosen, order[:, -count:], True, axis=1)
    return chosen[:, groups]


def keras_predict_proba(model, batch_size):
    """Softmax of a Keras model (logits out) in batches of `batch_size`, traced once."""
    import tensorflow as tf
    spec = tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def run(batch):
        return tf.nn.softmax(model(batch, training=False), axis=-1)

    def predict_proba(inputs):
        return np.concatenate([run(tf.constant(inputs[start:start + batch_size])).numpy()
                               for start in range(0, len(inputs), batch_size)])
    return predict_proba
