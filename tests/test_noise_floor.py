"""The noise floor: placebo halves of the dense population, checked by direct loops."""
import collections
import itertools
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pie.analysis import noise_floor
from pie.io import records
from pie.io.workdir import Workdir
from tests.conftest import error_lines, run_stage

N_IMAGES, N_CLASSES = 90, 3
SEEDS = [3, 1, 4, 0, 5, 2]  # six dense seeds, listed out of order


def hand_population(seed=0):
    """Six dense members and six of a variant (one per seed) that errs more on class 0."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_IMAGES) % N_CLASSES
    rows, predicted = [], []
    for method, sparsity, miss in (("dense", 0.0, [0.2, 0.2, 0.2]),
                                   ("magnitude", 0.9, [0.45, 0.15, 0.2])):
        for s in SEEDS:
            wrong = rng.random(N_IMAGES) < np.asarray(miss)[labels]
            predicted.append(np.where(wrong, (labels + 1 + rng.integers(0, 2, N_IMAGES))
                                      % N_CLASSES, labels))
            rows.append({"member_id": f"{method}_{s}", "method": method,
                         "sparsity": sparsity, "seed": s})
    manifest = pd.DataFrame(rows)
    # Top-1 on clean and on one shifted set, per member, for the excess error.
    accuracy = {"clean": rng.uniform(0.8, 0.9, len(rows)),
                "mean_corruption": rng.uniform(0.6, 0.8, len(rows))}
    return noise_floor.Population(np.array(predicted), labels, manifest, N_CLASSES,
                                  accuracy), np.array(predicted), labels, manifest, accuracy


def direct_modal(votes):
    """Modal label per image, ties to the highest label (pie_labels' default), by Counter."""
    modal, tied = [], []
    for column in np.asarray(votes).T:
        counts = collections.Counter(column.tolist())
        best = max(counts.values())
        winners = [label for label, count in counts.items() if count == best]
        modal.append(max(winners))
        tied.append(len(winners) > 1)
    return np.array(modal), np.array(tied)


def direct_measures(predicted, labels, accuracy, first, second, dense_of_seed, seeds_first,
                    seeds_second):
    """Every measure of `second` (rows) against `first` (rows), written out."""
    correct = predicted == labels
    base, _ = direct_modal(predicted[first])
    other, _ = direct_modal(predicted[second])
    pie_share = np.mean(base != other)
    # The class test: recall minus the population's mean top-1, Welch, BH per comparison.
    def normalised(rows):
        recall = np.array([[correct[m][labels == c].mean() for c in range(N_CLASSES)]
                           for m in rows])
        return recall - correct[rows].mean(axis=1).mean()
    v, b = normalised(second), normalised(first)
    p = np.array([scipy_stats.ttest_ind(v[:, c], b[:, c], equal_var=False).pvalue
                  for c in range(N_CLASSES)])
    delta = v.mean(axis=0) - b.mean(axis=0)
    significant = scipy_stats.false_discovery_control(p, method="bh") <= 0.05
    # Held out: per seed s of the split, the images where the halves without s differ.
    scores = []
    for s in list(seeds_first) + list(seeds_second):
        keep_first = [r for r, t in zip(first, seeds_first) if t != s]
        keep_second = [r for r, t in zip(second, seeds_second) if t != s]
        base_s, _ = direct_modal(predicted[keep_first])
        other_s, _ = direct_modal(predicted[keep_second])
        if (base_s != other_s).any():
            scores.append(correct[dense_of_seed[s]][base_s != other_s].mean())
    shift = lambda rows: 100 * (np.mean(accuracy["clean"][rows])
                                - np.mean(accuracy["mean_corruption"][rows]))
    return {"pie_share": pie_share, "hurt_classes": int((significant & (delta < 0)).sum()),
            "helped_classes": int((significant & (delta > 0)).sum()),
            "dense_top1_on_disagreement": np.mean(scores) if scores else np.nan,
            "excess_error": shift(second) - shift(first)}


def test_floor_over_every_balanced_split_of_six_seeds_equals_a_direct_computation():
    population, predicted, labels, manifest, accuracy = hand_population()
    table = noise_floor.noise_floor(population, min_errors=0, shifted="mean_corruption")
    assert list(table.columns) == noise_floor.NOISE_FLOOR_COLUMNS
    assert list(table["measure"]) == list(noise_floor.MEASURES)
    # Direct: the 10 ways to split 6 seeds into two halves of 3 (sorted seeds, the half
    # with the lowest seed first), the variant's members of the second half's seeds.
    dense = {s: i for i, s in enumerate(SEEDS)}
    variant = {s: 6 + i for i, s in enumerate(SEEDS)}
    placebo, at_size = collections.defaultdict(list), collections.defaultdict(list)
    splits = 0
    for first_seeds in itertools.combinations(range(6), 3):
        if 0 not in first_seeds:
            continue
        second_seeds = [s for s in range(6) if s not in first_seeds]
        splits += 1
        first = [dense[s] for s in first_seeds]
        for store, second in ((placebo, [dense[s] for s in second_seeds]),
                              (at_size, [variant[s] for s in second_seeds])):
            for measure, value in direct_measures(predicted, labels, accuracy, first, second,
                                                  dense, first_seeds, second_seeds).items():
                store[measure].append(value)
    assert splits == 10 and set(table["splits"]) == {10}
    assert set(table["members_per_half"]) == {3}
    for row in table.itertuples():
        floor = np.array(placebo[row.measure], np.float64)
        assert row.floor_mean == pytest.approx(np.nanmean(floor)), row.measure
        assert row.floor_q95 == pytest.approx(np.nanquantile(floor, 0.95)), row.measure
        assert row.variant_value == pytest.approx(np.nanmean(at_size[row.measure])), row.measure
        assert row.exceeds_floor == (row.variant_value > row.floor_q95)
    # The hand-made variant loses class 0: its PIEs exceed the floor.
    pies = table[table["measure"] == "pie_share"].iloc[0]
    assert pies["exceeds_floor"] and pies["variant_value"] > pies["floor_mean"]


def test_modal_labels_follow_the_pie_rule_and_its_ties():
    votes = np.array([[0, 1, 2, 2], [1, 1, 0, 2], [1, 2, 0, 1], [0, 2, 1, 1]])
    modal, tied = noise_floor.modal_labels(votes, "highest")
    expected, expected_tied = direct_modal(votes)
    np.testing.assert_array_equal(modal, expected)
    np.testing.assert_array_equal(tied, expected_tied)
    lowest, _ = noise_floor.modal_labels(votes, "lowest")
    assert list(lowest) == [0, 1, 0, 1]


@pytest.mark.parametrize("n, expected", [(4, 3), (5, 15), (6, 10), (10, 20), (21, 20)])
def test_balanced_splits_are_disjoint_halves_every_one_or_twenty(n, expected):
    splits = noise_floor.balanced_splits(n)
    assert len(splits) == expected == min(noise_floor.count_splits(n), 20)
    seen = set()
    for first, second in splits:
        assert len(first) == len(second) == n // 2 and not set(first) & set(second)
        assert first[0] < second[0]
        seen.add((tuple(first), tuple(second)))
    assert len(seen) == len(splits)
    np.testing.assert_array_equal(noise_floor.balanced_splits(n, seed=0)[0][0], splits[0][0])


def test_fewer_than_four_dense_members_is_na_with_the_reason():
    population, *_ = hand_population()
    keep = [0, 1, 2] + list(range(6, 12))
    small = noise_floor.Population(population.predicted[keep],
                                   np.arange(N_IMAGES) % N_CLASSES,
                                   population.manifest.iloc[keep], N_CLASSES)
    table = noise_floor.noise_floor(small)
    assert table["floor_mean"].isna().all() and not table["exceeds_floor"].any()
    assert set(table["note"]) == {
        "n/a: 3 dense members; the noise floor needs at least 4 (two halves of 2)"}


def test_stage_writes_the_table_and_refuses_paired_halves(tmp_path):
    from per_class_accuracy import noise_floor as stage
    population, predicted, labels, manifest, _ = hand_population()
    workdir = str(tmp_path / "w")
    rows = []
    for i, member in enumerate(manifest.itertuples()):
        records.write_predictions(Workdir(workdir).predictions_path(member.member_id),
                                  pd.DataFrame({
                                      "member_id": member.member_id,
                                      "image_id": np.arange(N_IMAGES), "label": labels,
                                      "predicted": predicted[i], "prob_predicted": 0.9,
                                      "prob_label": 0.5}))
        rows.append({"member_id": member.member_id, "method": member.method,
                     "sparsity": member.sparsity, "measured_sparsity": member.sparsity,
                     "seed": member.seed, "dataset": "hand", "model": "none", "top1": 0.8,
                     "path": member.member_id, "model_file": f"{member.member_id}/model.keras"})
    records.add_manifest_rows(workdir, rows)
    result = run_stage("per_class_accuracy.noise_floor", f"--workdir={workdir}",
                       "--test=paired", check=False)
    assert result.returncode == 2 and len(error_lines(result)) == 1
    output = Workdir(workdir).file("noise_floor")
    assert not os.path.exists(output)
    assert stage.run(workdir, min_errors=0)
    table = records.read_csv(output)
    direct = noise_floor.noise_floor(population, min_errors=0)
    np.testing.assert_allclose(table["floor_mean"].to_numpy(float)[:4],
                               direct["floor_mean"].to_numpy(float)[:4])
    # Without robustness/accuracy.csv the excess error is n/a, and says why.
    excess = table[table["measure"] == "excess_error"].iloc[0]
    assert np.isnan(excess["floor_mean"]) and "robustness_tests.analyze" in excess["note"]
    assert not stage.run(workdir, min_errors=0)  # up to date
