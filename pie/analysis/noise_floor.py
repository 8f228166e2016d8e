"""What seed noise alone shows: every headline finding against a placebo comparison.

Two disjoint halves of the dense population differ only by their seeds, so any PIE,
"significant" class or excess error between them is noise. This module splits the
dense members by seed into two halves of h = n // 2 members (every balanced split
when there are at most `MAX_SPLITS` of them, else `MAX_SPLITS` distinct seeded random
ones) and runs the first half (the baseline half) against the second (the placebo
half) through the same measures as the real analysis:

  pie_share                   share of images whose modal labels differ (the PIE rule,
                              the same tie rule)
  hurt_classes, helped_classes  classes significant under the per-class test and
                              correction (`per_class.compare_classes`, ceiling classes
                              untested)
  dense_top1_on_disagreement  held-out top-1 of the dense members on those images: per
                              seed s of the split, the images chosen without s's
                              members, scored on dense seed s; mean over seeds
  excess_error                [err(half 2, D') - err(half 2, clean)] - [err(half 1, D')
                              - err(half 1, clean)], half means, in points

Each compressed variant is measured at the same size, on the same splits: the
variant's members of the placebo half's seeds against the same baseline half. Per
measure and variant: `variant_value` (mean over splits), `floor_mean` and
`floor_q95` (mean and 95th percentile over splits of the placebo value) and
`exceeds_floor` (variant_value > floor_q95). Numpy only, no TensorFlow.
"""
import itertools
import math

import numpy as np
import pandas as pd

from pie.analysis import per_class, pie_labels, stats
from pie.io import errors, records

MEASURES = ("pie_share", "hurt_classes", "helped_classes", "dense_top1_on_disagreement",
            "excess_error")
NOISE_FLOOR_COLUMNS = [
    "measure", "method", "sparsity", "distribution", "members_per_half", "splits",
    "variant_value", "floor_mean", "floor_q95", "exceeds_floor", "note",
]
MIN_DENSE = 4  # two halves of at least 2 members: a class test needs 2 per set
MAX_SPLITS = 20
FLOOR_TESTS = ("welch", "permutation")  # the halves hold different seeds: no pairs


def validate_options(test, splits, ties):
    """Raises UsageError naming a test the halves cannot take, or a bad split count."""
    if test not in FLOOR_TESTS:
        raise errors.UsageError(
            f"test {test!r} is not allowed for the noise floor: use one of "
            f"{list(FLOOR_TESTS)} (two halves of the dense population hold different "
            "seeds, so they cannot be paired)")
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise errors.UsageError(f"splits must be a positive integer, got {splits!r}")
    pie_labels.validate_ties(ties)


def count_splits(n_members):
    """Unordered pairs of disjoint halves of n // 2 members each."""
    half = n_members // 2
    return math.comb(n_members, half) * math.comb(n_members - half, half) // 2


def balanced_splits(n_members, max_splits=MAX_SPLITS, seed=0):
    """[(first half, second half)] of positions 0..n-1, each half sorted, n // 2 each.

    The first half holds the lowest position of the two (one orientation per split).
    Every split when there are at most `max_splits`, else `max_splits` distinct ones
    drawn from `numpy.random.default_rng(seed)`.
    """
    half = n_members // 2
    if half < 1:
        return []
    if count_splits(n_members) <= max_splits:
        found = []
        for first in itertools.combinations(range(n_members), half):
            rest = [i for i in range(n_members) if i not in first]
            found += [(first, second) for second in itertools.combinations(rest, half)
                      if first[0] < second[0]]
        return [(np.array(a), np.array(b)) for a, b in found]
    rng = np.random.default_rng(seed)
    found = {}
    while len(found) < max_splits:
        order = rng.permutation(n_members)
        a, b = tuple(sorted(order[:half])), tuple(sorted(order[half:2 * half]))
        found.setdefault(min(a, b), max(a, b))
    return [(np.array(a), np.array(b)) for a, b in found.items()]


def modal_labels(votes, ties=pie_labels.DEFAULT_TIES):
    """(modal label, tied) per column of `votes` (members x images), as `pie_labels`:
    the most frequent label, a tie broken toward the highest label (or the lowest)."""
    votes = np.asarray(votes)
    same = (votes[:, None, :] == votes[None, :, :]).sum(axis=1)  # each vote's count
    best = same.max(axis=0)
    at_best = same == best
    if ties == "lowest":
        modal = np.where(at_best, votes, np.iinfo(votes.dtype).max).min(axis=0)
    else:
        modal = np.where(at_best, votes, -1).max(axis=0)
    # Each label at the best count contributes `best` votes: two labels or more, a tie.
    return modal, at_best.sum(axis=0) > best


class Population:
    """What the measures read, as member x image / member x class arrays."""

    def __init__(self, predicted, labels, manifest, n_classes, accuracy=None):
        """`predicted`: members x images (rows in `manifest` order); `labels` per image;
        `accuracy`: {distribution: top-1 per member} for the excess error, or None."""
        self.predicted = np.asarray(predicted)
        self.correct = self.predicted == np.asarray(labels)[None, :]
        self.manifest = manifest.reset_index(drop=True)
        n_members = len(self.manifest)
        member = np.repeat(np.arange(n_members), self.predicted.shape[1])
        label = np.tile(labels, n_members)
        n, correct, _ = per_class.class_counts(member, label, self.predicted.ravel(),
                                               n_members, n_classes)
        self.recall = stats.safe_ratio(correct, n)
        self.wrong = n - correct
        self.top1 = self.correct.mean(axis=1)
        self.accuracy = accuracy


def _pie_share(population, first, second, ties):
    base, base_tied = modal_labels(population.predicted[first], ties)
    other, other_tied = modal_labels(population.predicted[second], ties)
    is_pie, _ = pie_labels.pie_flags(base, other, base_tied, other_tied, ties)
    return float(is_pie.mean())


def _classes(population, first, second, test, alpha, correction, resamples, seed,
             min_errors):
    result = per_class.compare_classes(population.recall, population.wrong,
                                       population.top1, second, first, test, alpha,
                                       resamples, seed, min_errors)
    p_value = result["p"]
    tested = stats.benjamini_hochberg(p_value) if correction != "none" else p_value
    significant = tested <= alpha
    return (int((significant & (result["delta"] < 0)).sum()),
            int((significant & (result["delta"] > 0)).sum()))


def _heldout_dense_top1(population, first, second, dense_of_seed, seeds_first,
                        seeds_second, ties):
    """Mean over the split's seeds s of dense seed s's top-1 on the images where the
    two halves without s disagree (folds without such images add nothing)."""
    scores = []
    for s in np.r_[seeds_first, seeds_second]:
        base_rows = first[seeds_first != s]
        other_rows = second[seeds_second != s]
        if len(base_rows) == 0 or len(other_rows) == 0:
            continue
        base, base_tied = modal_labels(population.predicted[base_rows], ties)
        other, other_tied = modal_labels(population.predicted[other_rows], ties)
        is_pie, _ = pie_labels.pie_flags(base, other, base_tied, other_tied, ties)
        if is_pie.any():
            scores.append(population.correct[dense_of_seed[s]][is_pie].mean())
    return float(np.mean(scores)) if scores else np.nan


def _excess_error(population, first, second, shifted):
    """Half-mean excess error (points) of `second` over `first` on `shifted`."""
    accuracy = population.accuracy
    if accuracy is None or shifted not in accuracy or records.CLEAN not in accuracy:
        return np.nan

    def shift(rows):
        return 100 * (accuracy[records.CLEAN][rows].mean() - accuracy[shifted][rows].mean())
    return float(shift(second) - shift(first))


def split_measures(population, first, second, options, dense_of_seed, seeds_first,
                   seeds_second):
    """{measure: value} of `second` (rows) against `first` (rows) for one split."""
    hurt, helped = _classes(population, first, second, options["test"], options["alpha"],
                            options["correction"], options["resamples"],
                            options["resample_seed"], options["min_errors"])
    return {
        "pie_share": _pie_share(population, first, second, options["ties"]),
        "hurt_classes": hurt, "helped_classes": helped,
        "dense_top1_on_disagreement": _heldout_dense_top1(
            population, first, second, dense_of_seed, seeds_first, seeds_second,
            options["ties"]),
        "excess_error": _excess_error(population, first, second, options["shifted"]),
    }


def _rows_na(variants, distribution, reason, members_per_half=0, splits=0):
    keys = [(records.DENSE_METHOD, 0.0)] + list(variants)
    return pd.DataFrame(
        [{"measure": measure, "method": method, "sparsity": float(sparsity),
          "distribution": distribution, "members_per_half": members_per_half,
          "splits": splits, "variant_value": np.nan, "floor_mean": np.nan,
          "floor_q95": np.nan, "exceeds_floor": False, "note": reason}
         for method, sparsity in keys[1:] or keys[:1] for measure in MEASURES],
        columns=NOISE_FLOOR_COLUMNS)


def noise_floor(population, distribution=records.CLEAN, test="welch", alpha=0.05,
                correction=stats.DEFAULT_CORRECTION, min_errors=None,
                ties=pie_labels.DEFAULT_TIES, max_splits=MAX_SPLITS, split_seed=0,
                resamples=stats.DEFAULT_RESAMPLES, resample_seed=0, shifted=None):
    """The noise floor table (`NOISE_FLOOR_COLUMNS`), one row per measure x variant.

    `population`: a `Population`. `shifted`: the distribution D' of the excess error
    (`Population.accuracy` must hold it and `clean`); None leaves excess error NaN.
    With fewer than `MIN_DENSE` dense members, or two dense members of one seed,
    every value is NaN and `note` says why. A variant without exactly one member of
    each dense seed gets NaN variant values and a note.
    """
    validate_options(test, max_splits, ties)
    per_class.validate_test_options(alpha, correction, test, resamples, min_errors,
                                    resample_seed)
    manifest = population.manifest
    methods = manifest["method"].to_numpy()
    sparsities = manifest["sparsity"].astype(float).to_numpy()
    seeds = manifest["seed"].to_numpy()
    is_dense = methods == records.DENSE_METHOD
    variants = (manifest.loc[~is_dense, ["method", "sparsity"]].drop_duplicates()
                .sort_values(["method", "sparsity"]).itertuples(index=False, name=None))
    variants = [(method, float(sparsity)) for method, sparsity in variants]
    dense_rows = np.flatnonzero(is_dense)
    dense_seeds = seeds[dense_rows]
    if len(dense_rows) < MIN_DENSE:
        return _rows_na(variants, distribution,
                        f"n/a: {len(dense_rows)} dense members; the noise floor needs at "
                        f"least {MIN_DENSE} (two halves of 2)")
    if len(set(dense_seeds)) != len(dense_seeds):
        return _rows_na(variants, distribution,
                        "n/a: two dense members share a seed; halves are split by seed")
    order = np.argsort(dense_seeds, kind="stable")
    dense_rows, dense_seeds = dense_rows[order], dense_seeds[order]
    dense_of_seed = dict(zip(dense_seeds, dense_rows))
    splits = balanced_splits(len(dense_rows), max_splits, split_seed)
    half = len(splits[0][0])
    options = {"test": test, "alpha": alpha, "correction": correction,
               "min_errors": min_errors, "ties": ties, "resamples": resamples,
               "resample_seed": resample_seed, "shifted": shifted}

    placebo = {measure: [] for measure in MEASURES}
    by_variant = {key: {measure: [] for measure in MEASURES} for key in variants}
    notes = {}
    for key in variants:
        rows = np.flatnonzero((methods == key[0]) & (sparsities == key[1]))
        if sorted(seeds[rows].tolist()) != sorted(dense_seeds.tolist()):
            notes[key] = ("variant n/a: it needs exactly one member of each dense seed "
                          f"{sorted(dense_seeds.tolist())}, it has seeds "
                          f"{sorted(seeds[rows].tolist())}")
    variant_of_seed = {key: dict(zip(seeds[rows], rows)) for key in variants
                       if key not in notes
                       for rows in [np.flatnonzero((methods == key[0])
                                                   & (sparsities == key[1]))]}
    for first_positions, second_positions in splits:
        first, second = dense_rows[first_positions], dense_rows[second_positions]
        seeds_first, seeds_second = dense_seeds[first_positions], dense_seeds[second_positions]
        for measure, value in split_measures(population, first, second, options,
                                             dense_of_seed, seeds_first,
                                             seeds_second).items():
            placebo[measure].append(value)
        for key, of_seed in variant_of_seed.items():
            rows = np.array([of_seed[s] for s in seeds_second])
            for measure, value in split_measures(population, first, rows, options,
                                                 dense_of_seed, seeds_first,
                                                 seeds_second).items():
                by_variant[key][measure].append(value)

    table = []
    for key in variants:
        for measure in MEASURES:
            floor = np.asarray(placebo[measure], np.float64)
            values = np.asarray(by_variant[key][measure], np.float64)
            defined = floor[np.isfinite(floor)]
            floor_mean = float(defined.mean()) if defined.size else np.nan
            floor_q95 = float(np.quantile(defined, 0.95)) if defined.size else np.nan
            value = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
            note = notes.get(key, "")
            if measure == "excess_error" and shifted is None:
                note = note or "n/a: no shifted accuracy (run robustness_tests.analyze)"
            table.append({"measure": measure, "method": key[0], "sparsity": key[1],
                          "distribution": distribution, "members_per_half": half,
                          "splits": len(splits), "variant_value": value,
                          "floor_mean": floor_mean, "floor_q95": floor_q95,
                          "exceeds_floor": bool(np.isfinite(value) and np.isfinite(floor_q95)
                                                and value > floor_q95),
                          "note": note})
    return pd.DataFrame(table, columns=NOISE_FLOOR_COLUMNS)
