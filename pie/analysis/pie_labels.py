"""Modal labels of each population and Pruning Identified Exemplars (Hooker et al.).

For every population (all members sharing `(method, sparsity)`) and eval image,
the modal label is the class most of the population's members predict; a tie goes
to the LOWEST class id (the original code broke ties toward the largest). An image
is a PIE for a compressed variant when the variant's modal label differs from the
dense population's. The true label is not used to flag PIEs.
"""
import numpy as np
import pandas as pd

from pie.io import records

MODAL_COLUMNS = [
    "method", "sparsity", "image_id", "label", "modal_label", "n_members",
    "agreement", "mean_prob", "n_correct",
]
PIE_COLUMNS = [
    "method", "sparsity", "image_id", "label", "baseline_modal_label",
    "variant_modal_label", "baseline_n", "variant_n", "baseline_agreement",
    "variant_agreement", "baseline_mean_prob", "variant_mean_prob", "is_pie",
]
SUMMARY_COLUMNS = [
    "method", "sparsity", "n_images", "n_pie", "pie_fraction", "baseline_top1_all",
    "variant_top1_all", "baseline_top1_pie", "variant_top1_pie",
    "baseline_top1_non_pie", "variant_top1_non_pie",
]


def modal_votes(group, predicted, weights, n_groups, n_classes):
    """The most frequent class per group, ties to the lowest class id.

    Args:
      group: int array, the group (e.g. population x image) of each vote.
      predicted: int array, the class voted for, in 0..n_classes-1.
      weights: float array summed over the votes for the modal class.
      n_groups: groups are 0..n_groups-1; each must have at least one vote.

    Returns:
      (modal_class, modal_count, modal_weight_sum), arrays of length n_groups.
    """
    group = np.asarray(group, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    # One sort of (group, class) keys replaces a per-group loop; the
    # (n_groups x n_classes) table of counts would not fit in memory at ImageNet scale.
    keys = group * n_classes + predicted
    keys.sort()  # in place: np.unique would copy 9 million keys first
    key_starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[key_starts, len(keys)])
    keys = keys[key_starts]
    key_group = keys // n_classes
    key_class = keys % n_classes
    starts = np.flatnonzero(np.r_[True, key_group[1:] != key_group[:-1]])
    if len(starts) != n_groups or key_group[-1] != n_groups - 1:
        raise ValueError(f"modal_votes: expected votes in each of {n_groups} groups, "
                         f"got {len(starts)} groups with votes")
    # Highest count first, then lowest class: one score, maximised per group.
    score = counts * n_classes + (n_classes - 1 - key_class)
    best = np.maximum.reduceat(score, starts)
    modal_class = n_classes - 1 - best % n_classes
    # The votes for the modal class, found without the sort's inverse permutation.
    is_modal_vote = predicted == modal_class[group]
    weight_sums = np.bincount(group[is_modal_vote],
                              weights=np.asarray(weights, dtype=np.float64)[is_modal_vote],
                              minlength=n_groups)
    return modal_class, best // n_classes, weight_sums


def check_labels_agree(predictions):
    """Fails when members give one image different true labels; returns its index.

    Different labels for one image id mean the files come from different eval
    sets, and no image-by-image comparison is then meaningful. Returns the sorted
    distinct image ids, each row's position among them, and each image's label.
    """
    image_ids, image = _image_index(predictions["image_id"].to_numpy())
    labels = predictions["label"].to_numpy()
    label_of_image = np.empty(len(image_ids), dtype=labels.dtype)
    label_of_image[image] = labels
    disagree = np.flatnonzero(label_of_image[image] != labels)
    if disagree.size:
        row = int(disagree[0])
        raise records.ContractError(
            f"members disagree on the label of image {int(image_ids[image[row]])}: the "
            "predictions files must come from one eval set")
    return image_ids, image, label_of_image


def _image_index(image_id):
    """(sorted distinct image ids, position of each row's image among them).

    Every member covers the same images, so the distinct ids are few (50,000)
    and each row's position is a binary search, or a subtraction when the ids
    form a range, instead of a sort of all rows.
    """
    image_ids = np.sort(pd.unique(image_id))  # hashing: no sort of all rows
    if image_ids[-1] - image_ids[0] == len(image_ids) - 1:
        return image_ids, image_id - image_ids[0]
    return image_ids, np.searchsorted(image_ids, image_id)


def population_modal_labels(predictions, manifest, n_classes):
    """Modal label of every population on every image, columns `MODAL_COLUMNS`.

    Args:
      predictions: frame with `member` (row in `manifest`), `image_id`, `label`,
        `predicted`, `prob_predicted` (see `pie.analysis.stage_io.read_compact_predictions`);
        every member covers the same images.
      manifest: the population manifest.
      n_classes: labels and predictions lie in 0..n_classes-1.

    agreement = share of the population's members voting for the modal label;
    mean_prob = mean `prob_predicted` of those members (their probability of the
    modal label); n_correct = members whose prediction equals the true label.
    Rows are sorted by method, sparsity, image_id.
    """
    populations = (manifest[["method", "sparsity"]].drop_duplicates()
                   .sort_values(["method", "sparsity"]).reset_index(drop=True))
    member_population = (manifest[["method", "sparsity"]]
                         .merge(populations.reset_index(), on=["method", "sparsity"],
                                how="left")["index"].to_numpy())
    n_members = np.bincount(member_population, minlength=len(populations))

    image_ids, image, label_of_image = check_labels_agree(predictions)
    labels = predictions["label"].to_numpy()

    n_images = len(image_ids)
    population = member_population[predictions["member"].to_numpy()]
    group = population.astype(np.int64) * n_images + image
    predicted = predictions["predicted"].to_numpy()
    modal_label, modal_count, prob_sum = modal_votes(
        group, predicted, predictions["prob_predicted"].to_numpy(np.float64),
        len(populations) * n_images, n_classes)
    n_correct = np.bincount(group[predicted == labels], minlength=len(populations) * n_images)
    group_members = np.repeat(n_members, n_images)
    return pd.DataFrame({
        "method": np.repeat(populations["method"].to_numpy(), n_images),
        "sparsity": np.repeat(populations["sparsity"].to_numpy(), n_images),
        "image_id": np.tile(image_ids, len(populations)),
        "label": np.tile(label_of_image, len(populations)),
        "modal_label": modal_label,
        "n_members": group_members,
        "agreement": modal_count / group_members,
        "mean_prob": prob_sum / modal_count,
        "n_correct": n_correct,
    }, columns=MODAL_COLUMNS)


def _subset_top1(n_correct, n_members, mask):
    """Mean over members of their accuracy on the images in `mask`; NaN if empty.

    Every member sees every image, so this is the pooled share of correct votes.
    """
    if not mask.any():
        return np.nan
    return n_correct[mask].sum() / (n_members * mask.sum())


def pie_table(modal):
    """PIE flags of every variant against the dense population.

    Args:
      modal: `population_modal_labels` output.

    Returns:
      (table, summary): `PIE_COLUMNS` rows per variant x image and
      `SUMMARY_COLUMNS` rows per variant, sorted by method, sparsity (, image_id).
    """
    is_dense = (modal["method"] == records.DENSE_METHOD).to_numpy()
    if not is_dense.any():
        raise records.ContractError(
            "no dense population (method == 'dense') to compare the variants with")
    baseline = modal[is_dense]
    if baseline["sparsity"].nunique() > 1:
        raise records.ContractError(
            "dense members list different sparsities; the dense population is one, "
            "with sparsity 0")
    n_images = len(baseline)
    variants = modal[~is_dense]
    n_variants = len(variants) // n_images
    if n_variants == 0:
        return pd.DataFrame(columns=PIE_COLUMNS), pd.DataFrame(columns=SUMMARY_COLUMNS)

    def tiled(column):
        return np.tile(baseline[column].to_numpy(), n_variants)

    table = pd.DataFrame({
        "method": variants["method"].to_numpy(),
        "sparsity": variants["sparsity"].to_numpy(),
        "image_id": variants["image_id"].to_numpy(),
        "label": variants["label"].to_numpy(),
        "baseline_modal_label": tiled("modal_label"),
        "variant_modal_label": variants["modal_label"].to_numpy(),
        "baseline_n": tiled("n_members"),
        "variant_n": variants["n_members"].to_numpy(),
        "baseline_agreement": tiled("agreement"),
        "variant_agreement": variants["agreement"].to_numpy(),
        "baseline_mean_prob": tiled("mean_prob"),
        "variant_mean_prob": variants["mean_prob"].to_numpy(),
    }, columns=PIE_COLUMNS)
    table["is_pie"] = table["baseline_modal_label"] != table["variant_modal_label"]

    is_pie = table["is_pie"].to_numpy().reshape(n_variants, n_images)
    variant_correct = variants["n_correct"].to_numpy().reshape(n_variants, n_images)
    variant_n = variants["n_members"].to_numpy().reshape(n_variants, n_images)[:, 0]
    baseline_correct = baseline["n_correct"].to_numpy()
    baseline_n = int(baseline["n_members"].iloc[0])
    summaries = []
    for v in range(n_variants):
        row = {"method": variants["method"].iloc[v * n_images],
               "sparsity": variants["sparsity"].iloc[v * n_images],
               "n_images": n_images, "n_pie": int(is_pie[v].sum()),
               "pie_fraction": is_pie[v].mean()}
        for subset, mask in (("all", np.ones(n_images, bool)), ("pie", is_pie[v]),
                             ("non_pie", ~is_pie[v])):
            row[f"baseline_top1_{subset}"] = _subset_top1(baseline_correct, baseline_n, mask)
            row[f"variant_top1_{subset}"] = _subset_top1(
                variant_correct[v], int(variant_n[v]), mask)
        summaries.append(row)
    return table, pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)
