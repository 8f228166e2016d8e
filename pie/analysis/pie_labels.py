"""Modal labels of each population and Pruning Identified Exemplars (Hooker et al.).

For every population (all members sharing `(method, sparsity)`) and eval image,
the modal label is the class most of the population's members predict. A tie (two
or more classes share the largest count) is flagged, and broken by a rule (`TIES`):
toward the highest class id (the default, as the original code), the lowest, or
`exclude` (the highest is reported, but the image is never a PIE and is left out of
the PIE and non-PIE subsets). An image is a PIE for a compressed variant when the
variant's modal label differs from the dense population's. The true label is not
used to flag PIEs.

`heldout_top1` measures top-1 on PIEs out of sample: PIEs chosen from the members of
every seed but one, scored on the left-out seed's members, averaged over seeds.
"""
import concurrent.futures
import os
import warnings

import numpy as np
import pandas as pd

from pie.io import errors, records

TIES = ("highest", "lowest", "exclude")
DEFAULT_TIES = "highest"
FOLD_THREADS = min(2, os.cpu_count() or 1)  # held-out folds computed at once
MODAL_COLUMNS = [
    "method", "sparsity", "image_id", "label", "modal_label", "n_members",
    "agreement", "mean_prob", "n_correct", "tied",
]
# record_key and filename: where the image is in the data (empty when it has none).
NAME_COLUMNS = ["record_key", "filename"]
PIE_COLUMNS = [
    "method", "sparsity", "image_id", "record_key", "filename", "label", "baseline_modal_label",
    "variant_modal_label", "baseline_n", "variant_n", "baseline_agreement",
    "variant_agreement", "baseline_mean_prob", "variant_mean_prob", "baseline_tied",
    "variant_tied", "is_pie",
]
HELDOUT_COLUMNS = [
    "top1_on_pie_heldout_dense", "top1_on_pie_heldout_variant",
    "top1_on_non_pie_heldout_dense", "top1_on_non_pie_heldout_variant", "n_heldout_seeds",
]
SUMMARY_COLUMNS = [
    "method", "sparsity", "n_images", "n_pie", "pie_fraction", "baseline_top1_all",
    "variant_top1_all", "baseline_top1_pie", "variant_top1_pie",
    "baseline_top1_non_pie", "variant_top1_non_pie", "ties", "n_baseline_tied",
    "n_variant_tied", "n_tied", "n_pie_tied", "pie_tied_share",
] + HELDOUT_COLUMNS


def validate_ties(ties):
    """Raises UsageError naming a tie rule that is not one of `TIES`."""
    if ties not in TIES:
        raise errors.UsageError(f"ties {ties!r} is not allowed: use one of {list(TIES)}")


def modal_votes(group, predicted, weights, n_groups, n_classes, ties=DEFAULT_TIES,
                counted=None):
    """The most frequent class per group; ties broken by `ties` and flagged.

    Args:
      group: int array, the group (e.g. population x image) of each vote.
      predicted: int array, the class voted for, in 0..n_classes-1.
      weights: float array summed over the votes for the modal class.
      n_groups: groups are 0..n_groups-1; each must have at least one vote.
      ties: 'highest' or 'exclude' (the highest class id among the tied ones) or
        'lowest'.
      counted: (keys, counts, layout) of these votes when already counted
        (`Votes.counts`).

    Returns:
      (modal_class, modal_count, modal_weight_sum, tied), arrays of length
      n_groups; `tied` is true when two or more classes have the modal count.
    """
    validate_ties(ties)
    group = np.asarray(group, dtype=np.int64)
    # No int64 / float64 copies of the 9-million-row columns: bincount sums the
    # selected weights in float64 whatever their dtype.
    predicted = np.asarray(predicted)
    keys, counts, layout = counted or (*vote_counts(group, predicted, n_classes), None)
    modal_class, modal_count, tied = choose_modal(keys, counts, n_groups, n_classes, ties,
                                                  layout)
    del keys, counts
    # The votes for the modal class, found without the sort's inverse permutation.
    is_modal_vote = predicted == modal_class[group]
    weight_sums = np.bincount(group[is_modal_vote], weights=np.asarray(weights)[is_modal_vote],
                              minlength=n_groups)
    return modal_class, modal_count, weight_sums, tied


def vote_counts(group, predicted, n_classes):
    """(sorted distinct keys group x n_classes + class, votes for each key).

    One sort of (group, class) keys replaces a per-group loop; the (n_groups x
    n_classes) table of counts would not fit in memory at ImageNet scale.
    """
    keys = np.asarray(group, np.int64) * n_classes + np.asarray(predicted, np.int64)
    keys.sort()  # in place: np.unique would copy 9 million keys first
    key_starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[key_starts], np.diff(np.r_[key_starts, len(keys)])


def key_layout(keys, n_groups, n_classes):
    """(class of each key, first key of each group, keys per group) of `vote_counts` keys.

    Fails unless every one of the n_groups groups has a key.
    """
    key_group = keys // n_classes
    key_class = (keys % n_classes).astype(np.int32)  # class ids fit; halves later passes
    starts = np.flatnonzero(np.r_[True, key_group[1:] != key_group[:-1]])
    if len(starts) != n_groups or key_group[-1] != n_groups - 1:
        raise ValueError(f"modal_votes: expected votes in each of {n_groups} groups, "
                         f"got {len(starts)} groups with votes")
    return key_class, starts, np.diff(np.r_[starts, len(keys)])


def choose_modal(keys, counts, n_groups, n_classes, ties=DEFAULT_TIES, layout=None):
    """(modal class, modal count, tied) per group from `vote_counts` output.

    Keys may carry a count of 0 (votes taken away, as in `heldout_top1`): they never
    win while the group has a vote left. `layout`: `key_layout(keys, ...)`, when
    the same keys are scored with several counts.
    """
    key_class, starts, sizes = layout or key_layout(keys, n_groups, n_classes)
    # Highest count first, then the class the rule prefers: one score, maximised per group.
    lowest = ties == "lowest"
    # int32 when the scores fit: these passes over millions of keys are memory-bound.
    dtype = np.int32 if (int(counts.max(initial=0)) + 1) * n_classes < 2**31 else np.int64
    score = counts.astype(dtype) * dtype(n_classes)
    score += (n_classes - 1 - key_class) if lowest else key_class
    best = np.maximum.reduceat(score, starts)
    modal_class = (n_classes - 1 - best % n_classes) if lowest else best % n_classes
    modal_count = best // n_classes
    at_mode = counts == np.repeat(modal_count, sizes)
    tied = np.add.reduceat(at_mode, starts, dtype=np.int32) >= 2
    return modal_class, modal_count, tied


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
    against millions of rows. Ids within a span not much wider than the rows (eval
    positions, as the stages write them) are counted with one bincount; others are
    hashed, and each row's position found by binary search.
    """
    image_id = np.asarray(image_id)
    if image_id.size == 0:
        return image_id.copy(), np.zeros(0, np.intp)
    lowest, highest = int(image_id.min()), int(image_id.max())
    if highest - lowest < 4 * len(image_id) + 1024:
        present = np.bincount(image_id - lowest, minlength=highest - lowest + 1) > 0
        image_ids = np.flatnonzero(present) + lowest
        if len(image_ids) == highest - lowest + 1:  # every id of the span: a range
            return image_ids, image_id - lowest
        return image_ids, (np.cumsum(present) - 1)[image_id - lowest]
    image_ids = np.sort(pd.unique(image_id))  # hashing: no sort of all rows
    return image_ids, np.searchsorted(image_ids, image_id)


class Votes:
    """What `population_modal_labels` and `heldout_top1` both derive from the
    predictions, computed once when a stage calls both: the populations, each
    member's population, the image index, each row's group (population x image)
    and the sorted vote counts of those groups (one sort of 9 million keys).
    """

    def __init__(self, predictions, manifest, n_classes, image_index=None):
        """`image_index`: what `check_labels_agree(predictions)` returned, when the
        caller has it (it is computed otherwise)."""
        self.populations = (manifest[["method", "sparsity"]].drop_duplicates()
                            .sort_values(["method", "sparsity"]).reset_index(drop=True))
        self.member_population = (
            manifest[["method", "sparsity"]]
            .merge(self.populations.reset_index(), on=["method", "sparsity"],
                   how="left")["index"].to_numpy())
        self.image_ids, image, self.label_of_image = (
            image_index or check_labels_agree(predictions))
        self.n_images = len(self.image_ids)
        self.n_groups = len(self.populations) * self.n_images
        self.n_classes = n_classes
        # group = population x image, built in place (a 9-million-row int64 array).
        self.group = self.member_population[predictions["member"].to_numpy()].astype(np.int64)
        self.group *= self.n_images
        self.group += image
        self._counts = None

    def counts(self, predicted):
        """(keys, counts, key layout) of the votes (`vote_counts`, `key_layout`)."""
        if self._counts is None:
            keys, counts = vote_counts(self.group, predicted, self.n_classes)
            self._counts = keys, counts, key_layout(keys, self.n_groups, self.n_classes)
        return self._counts


def population_modal_labels(predictions, manifest, n_classes, ties=DEFAULT_TIES,
                            votes=None):
    """Modal label of every population on every image, columns `MODAL_COLUMNS`.

    Args:
      predictions: frame with `member` (row in `manifest`), `image_id`, `label`,
        `predicted`, `prob_predicted` (see `pie.analysis.stage_io.read_compact_predictions`);
        every member covers the same images.
      manifest: the population manifest.
      n_classes: labels and predictions lie in 0..n_classes-1.

    agreement = share of the population's members voting for the modal label;
    mean_prob = mean `prob_predicted` of those members (their probability of the
    modal label); n_correct = members whose prediction equals the true label;
    tied = the modal count is shared by two or more labels (broken by `ties`).
    Rows are sorted by method, sparsity, image_id.
    """
    votes = votes or Votes(predictions, manifest, n_classes)
    populations, group, n_images = votes.populations, votes.group, votes.n_images
    n_members = np.bincount(votes.member_population, minlength=len(populations))
    image_ids, label_of_image = votes.image_ids, votes.label_of_image
    labels = predictions["label"].to_numpy()
    predicted = predictions["predicted"].to_numpy()
    keys, counts, layout = votes.counts(predicted)
    modal_label, modal_count, prob_sum, tied = modal_votes(
        group, predicted, predictions["prob_predicted"].to_numpy(),
        len(populations) * n_images, n_classes, ties, counted=(keys, counts, layout))
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
        "tied": tied,
    }, columns=MODAL_COLUMNS)


def _subset_top1(n_correct, n_members, mask):
    """Mean over members of their accuracy on the images in `mask`; NaN if empty.

    Every member sees every image, so this is the pooled share of correct votes.
    """
    if not mask.any():
        return np.nan
    return n_correct[mask].sum() / (n_members * mask.sum())


def pie_flags(baseline_label, variant_label, baseline_tied, variant_tied, ties):
    """(is_pie, counted): PIE flags and which images the PIE / non-PIE subsets use.

    With `ties='exclude'` an image whose modal label is tied in either population is
    never a PIE and belongs to neither subset; otherwise every image counts.
    """
    is_pie = np.asarray(baseline_label) != np.asarray(variant_label)
    counted = np.ones(is_pie.shape, bool)
    if ties == "exclude":
        counted = ~(np.asarray(baseline_tied, bool) | np.asarray(variant_tied, bool))
        is_pie &= counted
    return is_pie, counted


def record_names(image_ids, names):
    """(record_key, filename) arrays of each of `image_ids`: from `names`
    ({image_id, record_key, filename} of every eval record, sources.eval_record_names),
    empty texts when it is None."""
    image_ids = np.asarray(image_ids, np.int64)
    if names is None:
        empty = np.full(len(image_ids), "", object)
        return empty, empty.copy()
    known = pd.DataFrame(names)
    repeated = known["image_id"][known["image_id"].duplicated()]
    if len(repeated):
        raise records.ContractError(
            f"the data gives two eval records the image id {int(repeated.iloc[0])}")
    found = known.set_index("image_id").reindex(image_ids)
    missing = found["record_key"].isna().to_numpy()
    if missing.any():
        raise records.ContractError(
            f"the predictions name image {int(image_ids[missing][0])}, which is not in the "
            "data's eval split: they were made from other data")
    return found["record_key"].to_numpy(object), found["filename"].to_numpy(object)


def read_pie_table(path, **kwargs):
    """`pie.csv` (PIE_COLUMNS checked), record_key and filename kept as text."""
    table = records.read_csv(path, PIE_COLUMNS, dtype={c: str for c in NAME_COLUMNS},
                             **kwargs)
    table[NAME_COLUMNS] = table[NAME_COLUMNS].fillna("")
    return table


def pie_table(modal, ties=DEFAULT_TIES, names=None):
    """PIE flags of every variant against the dense population.

    Args:
      modal: `population_modal_labels` output (made with the same `ties`).
      ties: the tie rule; 'exclude' keeps tied images out of the PIEs and of the
        PIE and non-PIE subsets.
      names: {image_id, record_key, filename} of the eval records, or None (the
        data has none: those columns are empty).

    Returns:
      (table, summary): `PIE_COLUMNS` rows per variant x image and
      `SUMMARY_COLUMNS` rows per variant, sorted by method, sparsity (, image_id).
    """
    validate_ties(ties)
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

    record_key, filename = record_names(baseline["image_id"].to_numpy(), names)
    table = pd.DataFrame({
        "method": variants["method"].to_numpy(),
        "sparsity": variants["sparsity"].to_numpy(),
        "image_id": variants["image_id"].to_numpy(),
        "record_key": np.tile(record_key, n_variants),
        "filename": np.tile(filename, n_variants),
        "label": variants["label"].to_numpy(),
        "baseline_modal_label": tiled("modal_label"),
        "variant_modal_label": variants["modal_label"].to_numpy(),
        "baseline_n": tiled("n_members"),
        "variant_n": variants["n_members"].to_numpy(),
        "baseline_agreement": tiled("agreement"),
        "variant_agreement": variants["agreement"].to_numpy(),
        "baseline_mean_prob": tiled("mean_prob"),
        "variant_mean_prob": variants["mean_prob"].to_numpy(),
        "baseline_tied": tiled("tied"),
        "variant_tied": variants["tied"].to_numpy(),
    }, columns=PIE_COLUMNS)
    is_pie, counted = pie_flags(table["baseline_modal_label"], table["variant_modal_label"],
                                table["baseline_tied"], table["variant_tied"], ties)
    table["is_pie"] = is_pie

    is_pie = is_pie.reshape(n_variants, n_images)
    counted = counted.reshape(n_variants, n_images)
    variant_tied = table["variant_tied"].to_numpy(bool).reshape(n_variants, n_images)
    baseline_tied = baseline["tied"].to_numpy(bool)
    variant_correct = variants["n_correct"].to_numpy().reshape(n_variants, n_images)
    variant_n = variants["n_members"].to_numpy().reshape(n_variants, n_images)[:, 0]
    baseline_correct = baseline["n_correct"].to_numpy()
    baseline_n = int(baseline["n_members"].iloc[0])
    summaries = []
    for v in range(n_variants):
        row = {"method": variants["method"].iloc[v * n_images],
               "sparsity": variants["sparsity"].iloc[v * n_images],
               "n_images": n_images, "n_pie": int(is_pie[v].sum()),
               "pie_fraction": is_pie[v].mean(), "ties": ties,
               "n_baseline_tied": int(baseline_tied.sum()),
               "n_variant_tied": int(variant_tied[v].sum()),
               "n_tied": int((baseline_tied | variant_tied[v]).sum())}
        # PIEs whose flag the tie rule decided: a tie in either population.
        row["n_pie_tied"] = int((is_pie[v] & (baseline_tied | variant_tied[v])).sum())
        row["pie_tied_share"] = row["n_pie_tied"] / row["n_pie"] if row["n_pie"] else np.nan
        for subset, mask in (("all", np.ones(n_images, bool)), ("pie", is_pie[v]),
                             ("non_pie", ~is_pie[v] & counted[v])):
            row[f"baseline_top1_{subset}"] = _subset_top1(baseline_correct, baseline_n, mask)
            row[f"variant_top1_{subset}"] = _subset_top1(
                variant_correct[v], int(variant_n[v]), mask)
        summaries.append(row)
    return table, pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)


def heldout_top1(predictions, manifest, n_classes, ties=DEFAULT_TIES, votes=None):
    """Top-1 on PIEs and non-PIEs measured on members that did not choose them.

    For each seed s that both the dense population and a variant have, and that
    leaves each of them at least one member of another seed: PIEs are chosen from
    the members of every other seed, and the dense / variant top-1 on those PIEs
    (and on the other images) is the mean accuracy of the seed-s members of that
    population. The result is the mean over such seeds (folds with no PIE add
    nothing to the PIE means). Returns one row per variant: method, sparsity and
    `HELDOUT_COLUMNS` (NaN without any fold).

    The votes are counted once; a fold takes the left-out seed's votes away from
    the counts instead of counting the others again.
    """
    validate_ties(ties)
    if "seed" not in manifest.columns:
        raise records.ContractError("held-out PIE accuracy needs the manifest's seed column")
    votes = votes or Votes(predictions, manifest, n_classes)
    populations, member_population = votes.populations, votes.member_population
    seeds = manifest["seed"].to_numpy()
    n_populations = len(populations)
    dense = int(np.flatnonzero(populations["method"] == records.DENSE_METHOD)[0])
    variants = [p for p in range(n_populations) if p != dense]

    n_images, group = votes.n_images, votes.group
    member = predictions["member"].to_numpy()
    predicted = predictions["predicted"].to_numpy()
    labels = predictions["label"].to_numpy()
    keys, counts, layout = votes.counts(predicted)
    # Rows of a seed: read_predictions lays members out one after another, so a
    # member's rows are one range; otherwise they are searched for.
    if np.all(member[1:] >= member[:-1]):
        bounds = np.searchsorted(member, np.arange(len(manifest) + 1))

        def seed_rows(left_out):
            return np.concatenate([np.arange(bounds[m], bounds[m + 1])
                                   for m in np.flatnonzero(left_out)])
    else:
        def seed_rows(left_out):
            return np.flatnonzero(left_out[member])

    def fold(seed):
        """{variant: [4 top-1 values]} of the fold leaving `seed` out ({} if none)."""
        left_out = seeds == seed
        n_test = np.bincount(member_population[left_out], minlength=n_populations)
        n_train = np.bincount(member_population[~left_out], minlength=n_populations)
        if n_test[dense] == 0 or n_train[dense] == 0:
            return {}
        rows = seed_rows(left_out)  # the left-out seed's rows, in order
        taken = np.searchsorted(keys, group[rows] * n_classes + predicted[rows])
        remaining = counts - np.bincount(taken, minlength=len(keys))
        modal, _, tied = choose_modal(keys, remaining, n_populations * n_images, n_classes,
                                      ties, layout)
        modal = modal.reshape(n_populations, n_images)
        tied = tied.reshape(n_populations, n_images)
        right = (labels[rows] == predicted[rows]).astype(np.float64)
        correct = np.bincount(group[rows], weights=right,
                              minlength=n_populations * n_images).reshape(n_populations,
                                                                          n_images)
        score = correct / np.maximum(n_test, 1)[:, None]
        values = {}
        for p in variants:
            if n_test[p] == 0 or n_train[p] == 0:
                continue
            is_pie, counted = pie_flags(modal[dense], modal[p], tied[dense], tied[p], ties)
            non_pie = ~is_pie & counted
            values[p] = [
                score[dense][is_pie].mean() if is_pie.any() else np.nan,
                score[p][is_pie].mean() if is_pie.any() else np.nan,
                score[dense][non_pie].mean() if non_pie.any() else np.nan,
                score[p][non_pie].mean() if non_pie.any() else np.nan]
        return values

    folds = {p: [] for p in variants}
    # Folds two at a time: numpy's searches and reductions leave the GIL free.
    with concurrent.futures.ThreadPoolExecutor(FOLD_THREADS) as pool:
        for values in pool.map(fold, np.unique(seeds)):
            for p, fold_values in values.items():
                folds[p].append(fold_values)
    rows = []
    for p, values in folds.items():
        values = np.asarray(values, np.float64).reshape(-1, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no fold had PIEs
            means = np.nanmean(values, axis=0) if len(values) else np.full(4, np.nan)
        rows.append([populations["method"].iloc[p], populations["sparsity"].iloc[p], *means,
                     len(values)])
    return pd.DataFrame(rows, columns=["method", "sparsity"] + HELDOUT_COLUMNS)


def with_heldout(summary, heldout):
    """`pie_table`'s summary with the held-out columns of `heldout_top1` filled in."""
    filled = summary.drop(columns=HELDOUT_COLUMNS).merge(
        heldout, on=["method", "sparsity"], how="left")
    filled["n_heldout_seeds"] = filled["n_heldout_seeds"].fillna(0).astype(np.int64)
    return filled[SUMMARY_COLUMNS]
