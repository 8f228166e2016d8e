"""Tests of pie.analysis.pie_labels: modal labels, tie rules, PIE flags, held-out top-1."""
import re

import numpy as np
import pandas as pd
import pytest

from pie.analysis import pie_labels
from pie.io import records

MANIFEST = pd.DataFrame({
    "member_id": ["d1", "d2", "d3", "v1", "v2"],
    "method": ["dense"] * 3 + ["magnitude"] * 2,
    "sparsity": [0.0] * 3 + [0.9] * 2,
})
# (member row, image_id, label, predicted, prob_predicted), chosen by hand:
# image 10: dense votes 0,0,1 -> 0; variant 1,2 tie -> 1 (lowest) or 2 (highest): a PIE.
# image 20: everyone votes 1.
# image 30: dense 2,0,0 -> 0; variant 0,2 tie -> 0 (lowest: no PIE) or 2 (highest: a PIE).
VOTES = [
    (0, 10, 0, 0, 0.9), (1, 10, 0, 0, 0.8), (2, 10, 0, 1, 0.6), (3, 10, 0, 1, 0.5),
    (4, 10, 0, 2, 0.7),
    (0, 20, 1, 1, 0.7), (1, 20, 1, 1, 0.8), (2, 20, 1, 1, 0.9), (3, 20, 1, 1, 0.6),
    (4, 20, 1, 1, 0.4),
    (0, 30, 2, 2, 0.9), (1, 30, 2, 0, 0.3), (2, 30, 2, 0, 0.5), (3, 30, 2, 0, 0.2),
    (4, 30, 2, 2, 0.6),
]


def predictions_of(votes, shuffle_seed=0):
    frame = pd.DataFrame(votes, columns=["member", "image_id", "label", "predicted",
                                         "prob_predicted"])
    # Row order must not matter.
    return frame.sample(frac=1.0, random_state=shuffle_seed).reset_index(drop=True)


class TestModalVotes:

    VOTES = dict(group=[0, 0, 0, 0, 1, 1, 1], predicted=[2, 1, 1, 2, 3, 3, 0],
                 weights=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], n_groups=2, n_classes=4)

    def test_ties_go_to_the_lowest_class(self):
        modal, count, weight, tied = pie_labels.modal_votes(**self.VOTES, ties="lowest")
        np.testing.assert_array_equal(modal, [1, 3])
        np.testing.assert_array_equal(count, [2, 2])
        np.testing.assert_allclose(weight, [0.5, 1.1])
        assert tied.tolist() == [True, False]  # group 0: classes 1 and 2 both have 2

    @pytest.mark.parametrize("ties", ["highest", "exclude"])
    def test_ties_go_to_the_highest_class_by_default(self, ties):
        modal, count, weight, tied = pie_labels.modal_votes(**self.VOTES, ties=ties)
        np.testing.assert_array_equal(modal, [2, 3])
        np.testing.assert_array_equal(count, [2, 2])
        np.testing.assert_allclose(weight, [0.5, 1.1])
        assert tied.tolist() == [True, False]
        assert pie_labels.modal_votes(**self.VOTES)[0].tolist() == [2, 3]

    def test_three_way_tie_is_flagged(self):
        _, count, _, tied = pie_labels.modal_votes([0, 0, 0, 1], [0, 1, 2, 1],
                                                   [1.0] * 4, 2, 3)
        assert count.tolist() == [1, 1] and tied.tolist() == [True, False]

    def test_rejects_unknown_rule(self):
        with pytest.raises(pie_labels.errors.UsageError, match=re.escape(
                "ties 'random' is not allowed: use one of ['highest', 'lowest', 'exclude']")):
            pie_labels.modal_votes(**self.VOTES, ties="random")

    def test_group_without_votes(self):
        with pytest.raises(ValueError, match="expected votes in each of 3 groups, got 2"):
            pie_labels.modal_votes([0, 1], [0, 0], [1.0, 1.0], n_groups=3, n_classes=2)


class TestPopulationModalLabels:

    def test_hand_example(self):
        modal = pie_labels.population_modal_labels(predictions_of(VOTES), MANIFEST, 3,
                                                   ties="lowest")
        assert list(modal.columns) == pie_labels.MODAL_COLUMNS
        assert list(modal["tied"]) == [False] * 3 + [True, False, True]
        assert list(modal["method"]) == ["dense"] * 3 + ["magnitude"] * 3
        assert list(modal["image_id"]) == [10, 20, 30] * 2
        assert list(modal["label"]) == [0, 1, 2] * 2
        assert list(modal["modal_label"]) == [0, 1, 0, 1, 1, 0]
        assert list(modal["n_members"]) == [3, 3, 3, 2, 2, 2]
        np.testing.assert_allclose(modal["agreement"], [2 / 3, 1, 2 / 3, 0.5, 1, 0.5])
        np.testing.assert_allclose(modal["mean_prob"],
                                   [0.85, 0.8, 0.4, 0.5, 0.5, 0.2])
        assert list(modal["n_correct"]) == [2, 3, 1, 0, 2, 1]

    def test_members_disagreeing_on_a_label(self):
        votes = [list(v) for v in VOTES]
        votes[4][2] = 1  # v2 says image 10 is class 1
        with pytest.raises(records.ContractError,
                           match="members disagree on the label of image 10"):
            pie_labels.population_modal_labels(predictions_of(votes), MANIFEST, 3)


class TestPieTable:

    def test_hand_example(self):
        modal = pie_labels.population_modal_labels(predictions_of(VOTES), MANIFEST, 3,
                                                   ties="lowest")
        table, summary = pie_labels.pie_table(modal, ties="lowest")
        assert list(table.columns) == pie_labels.PIE_COLUMNS
        assert list(table["image_id"]) == [10, 20, 30]
        assert list(table["is_pie"]) == [True, False, False]
        assert (summary["n_pie_tied"].iloc[0], summary["pie_tied_share"].iloc[0]) == (1, 1.0)
        assert list(table["baseline_modal_label"]) == [0, 1, 0]
        assert list(table["variant_modal_label"]) == [1, 1, 0]
        assert list(table["baseline_n"]) == [3] * 3 and list(table["variant_n"]) == [2] * 3
        np.testing.assert_allclose(table["variant_agreement"], [0.5, 1, 0.5])
        np.testing.assert_allclose(table["baseline_mean_prob"], [0.85, 0.8, 0.4])
        assert list(summary.columns) == pie_labels.SUMMARY_COLUMNS
        row = summary.iloc[0]
        assert (row["method"], row["sparsity"], row["n_images"], row["n_pie"]) == (
            "magnitude", 0.9, 3, 1)
        assert row["pie_fraction"] == pytest.approx(1 / 3)
        # Correct votes: dense 2, 3, 1 of 3; variant 0, 2, 1 of 2.
        assert row["baseline_top1_all"] == pytest.approx(6 / 9)
        assert row["variant_top1_all"] == pytest.approx(3 / 6)
        assert row["baseline_top1_pie"] == pytest.approx(2 / 3)
        assert row["variant_top1_pie"] == pytest.approx(0.0)
        assert row["baseline_top1_non_pie"] == pytest.approx(4 / 6)
        assert row["variant_top1_non_pie"] == pytest.approx(3 / 4)

    def test_true_label_is_not_used(self):
        # Same votes, other labels: the PIE flags stay.
        votes = [(m, i, (label + 1) % 3, p, q) for m, i, label, p, q in VOTES]
        modal = pie_labels.population_modal_labels(predictions_of(votes), MANIFEST, 3)
        table, _ = pie_labels.pie_table(modal)
        assert list(table["is_pie"]) == [True, False, True]

    def test_no_pie_gives_nan_top1_on_pies(self):
        votes = [v for v in VOTES if v[1] != 10]
        modal = pie_labels.population_modal_labels(predictions_of(votes), MANIFEST, 3,
                                                   ties="lowest")
        _, summary = pie_labels.pie_table(modal, ties="lowest")
        assert summary["n_pie"].iloc[0] == 0
        assert np.isnan(summary["baseline_top1_pie"].iloc[0])
        assert np.isnan(summary["variant_top1_pie"].iloc[0])

    def test_missing_dense_population(self):
        votes = [v for v in VOTES if v[0] >= 3]
        manifest = MANIFEST.iloc[3:].reset_index(drop=True)
        votes = [(m - 3, *rest) for m, *rest in votes]
        modal = pie_labels.population_modal_labels(predictions_of(votes), manifest, 3)
        with pytest.raises(records.ContractError,
                           match=r"no dense population \(method == 'dense'\)"):
            pie_labels.pie_table(modal)

    def test_rows_name_their_records_where_the_data_has_them(self, tmp_path):
        modal = pie_labels.population_modal_labels(predictions_of(VOTES), MANIFEST, 3)
        # The data's eval records in another order than the table, one more than predicted.
        names = {"image_id": np.array([30, 40, 10, 20]),
                 "record_key": np.array(["v-1:0", "v-1:1", "v-0:0", "v-0:1"], object),
                 "filename": np.array(["c.JPEG", "d.JPEG", "", "0001"], object)}
        table, _ = pie_labels.pie_table(modal, names=names)
        assert list(table["record_key"]) == ["v-0:0", "v-0:1", "v-1:0"]
        assert list(table["filename"]) == ["", "0001", "c.JPEG"]
        # Written and read back as text: an empty name stays empty, '0001' stays '0001'.
        path = str(tmp_path / "pie.csv")
        records.write_csv(path, table, pie_labels.PIE_COLUMNS)
        back = pie_labels.read_pie_table(path)
        assert list(back["filename"]) == ["", "0001", "c.JPEG"]
        # Data without records (digits, mnist5k, tfds): the columns are there, empty.
        table, _ = pie_labels.pie_table(modal)
        assert list(table["record_key"]) == list(table["filename"]) == [""] * 3
        with pytest.raises(records.ContractError, match="^the predictions name image 30, "
                           "which is not in the data's eval split: they were made from "
                           "other data$"):
            pie_labels.pie_table(modal, names={k: v[1:] for k, v in names.items()})
        twice = {k: np.concatenate([v, v[:1]]) for k, v in names.items()}
        with pytest.raises(records.ContractError,
                           match="^the data gives two eval records the image id 30$"):
            pie_labels.pie_table(modal, names=twice)

    def test_only_dense_gives_empty_tables(self):
        votes = [v for v in VOTES if v[0] < 3]
        modal = pie_labels.population_modal_labels(
            predictions_of(votes), MANIFEST.iloc[:3], 3)
        table, summary = pie_labels.pie_table(modal)
        assert table.empty and list(table.columns) == pie_labels.PIE_COLUMNS
        assert summary.empty and list(summary.columns) == pie_labels.SUMMARY_COLUMNS


class TestTieRules:
    """The hand example's variant ties on images 10 (1 vs 2) and 30 (0 vs 2)."""

    def tables(self, ties):
        modal = pie_labels.population_modal_labels(predictions_of(VOTES), MANIFEST, 3, ties)
        return pie_labels.pie_table(modal, ties)

    def test_tied_columns(self):
        table, summary = self.tables("highest")
        assert list(table["baseline_tied"]) == [False, False, False]
        assert list(table["variant_tied"]) == [True, False, True]
        row = summary.iloc[0]
        assert (row["ties"], row["n_baseline_tied"], row["n_variant_tied"], row["n_tied"]) == (
            "highest", 0, 2, 2)

    def test_highest(self):
        table, summary = self.tables("highest")
        assert list(table["variant_modal_label"]) == [2, 1, 2]
        assert list(table["is_pie"]) == [True, False, True]
        # PIEs 10 and 30: dense right 2 + 1 of 6 votes, variant 0 + 1 of 4.
        assert summary["baseline_top1_pie"].iloc[0] == pytest.approx(3 / 6)
        assert summary["variant_top1_pie"].iloc[0] == pytest.approx(1 / 4)
        # Both PIEs were decided by the variant's tie: share 1; under 'lowest' the
        # one PIE left (image 10) is still a tie's.
        assert (summary["n_pie_tied"].iloc[0], summary["pie_tied_share"].iloc[0]) == (2, 1.0)

    def test_lowest(self):
        table, _ = self.tables("lowest")
        assert list(table["variant_modal_label"]) == [1, 1, 0]
        assert list(table["is_pie"]) == [True, False, False]

    def test_exclude(self):
        table, summary = self.tables("exclude")
        assert list(table["is_pie"]) == [False, False, False]
        row = summary.iloc[0]
        assert row["n_pie"] == 0 and row["n_tied"] == 2
        assert row["n_pie_tied"] == 0 and np.isnan(row["pie_tied_share"])
        # Only image 20 is left for the non-PIE subset; all images for 'all'.
        assert row["baseline_top1_non_pie"] == 1.0 and row["variant_top1_non_pie"] == 1.0
        assert row["baseline_top1_all"] == pytest.approx(6 / 9)


class TestHeldOut:
    # Dense and variant members of seeds 1, 2, 3 on 4 images of 3 classes.
    MANIFEST = pd.DataFrame({
        "member_id": ["d1", "d2", "d3", "v1", "v2", "v3"],
        "method": ["dense"] * 3 + ["magnitude"] * 3,
        "sparsity": [0.0] * 3 + [0.5] * 3, "seed": [1, 2, 3, 1, 2, 3]})
    LABELS = [0, 1, 2, 0]
    PREDICTED = {  # member row: prediction per image
        0: [0, 1, 2, 0], 1: [0, 1, 1, 0], 2: [1, 1, 2, 0],
        3: [1, 1, 2, 2], 4: [0, 2, 2, 2], 5: [1, 1, 0, 0]}

    def predictions(self):
        rows = [(member, 100 + i, self.LABELS[i], p, 0.5)
                for member, predicted in self.PREDICTED.items()
                for i, p in enumerate(predicted)]
        return predictions_of(rows)

    def expected(self):
        """Leave-one-seed-out by hand: Counter modes (ties to the highest class)."""
        import collections

        def mode(members, image):
            counts = collections.Counter(self.PREDICTED[m][image] for m in members)
            top = max(counts.values())
            return max(c for c, n in counts.items() if n == top)

        def accuracy(members, images):
            votes = [self.PREDICTED[m][i] == self.LABELS[i] for m in members for i in images]
            return np.mean(votes) if votes else np.nan

        folds = []
        for seed, (dense_out, variant_out) in {1: (0, 3), 2: (1, 4), 3: (2, 5)}.items():
            dense_in = [m for m in (0, 1, 2) if m != dense_out]
            variant_in = [m for m in (3, 4, 5) if m != variant_out]
            pies = [i for i in range(4) if mode(dense_in, i) != mode(variant_in, i)]
            rest = [i for i in range(4) if i not in pies]
            folds.append([accuracy([dense_out], pies), accuracy([variant_out], pies),
                          accuracy([dense_out], rest), accuracy([variant_out], rest)])
        return np.nanmean(np.array(folds, float), axis=0)

    @pytest.mark.parametrize("threads", [1, 2])
    def test_equals_a_direct_computation(self, threads, monkeypatch):
        monkeypatch.setattr(pie_labels, "FOLD_THREADS", threads)
        heldout = pie_labels.heldout_top1(self.predictions(), self.MANIFEST, 3)
        assert list(heldout.columns) == ["method", "sparsity"] + pie_labels.HELDOUT_COLUMNS
        row = heldout.iloc[0]
        expected = self.expected()
        np.testing.assert_allclose(row[pie_labels.HELDOUT_COLUMNS[:4]].to_numpy(float),
                                   expected)
        assert row["n_heldout_seeds"] == 3

    def test_votes_given_the_checked_image_index(self):
        predictions = self.predictions()
        index = pie_labels.check_labels_agree(predictions)
        votes = pie_labels.Votes(predictions, self.MANIFEST, 3, index)
        assert votes.image_ids is index[0]  # taken, not computed again
        heldout = pie_labels.heldout_top1(predictions, self.MANIFEST, 3, votes=votes)
        np.testing.assert_allclose(
            heldout[pie_labels.HELDOUT_COLUMNS[:4]].to_numpy(float)[0], self.expected())

    def test_differs_from_in_sample(self):
        # In-sample the same members choose and score the PIEs.
        modal = pie_labels.population_modal_labels(self.predictions(), self.MANIFEST, 3)
        _, summary = pie_labels.pie_table(modal)
        heldout = pie_labels.heldout_top1(self.predictions(), self.MANIFEST, 3)
        filled = pie_labels.with_heldout(summary, heldout)
        assert list(filled.columns) == pie_labels.SUMMARY_COLUMNS
        assert filled["top1_on_pie_heldout_dense"].iloc[0] != pytest.approx(
            filled["baseline_top1_pie"].iloc[0])

    def test_one_seed_has_no_fold(self):
        manifest = self.MANIFEST.assign(seed=1)
        heldout = pie_labels.heldout_top1(self.predictions(), manifest, 3)
        assert heldout["n_heldout_seeds"].iloc[0] == 0
        assert heldout[pie_labels.HELDOUT_COLUMNS[:4]].isna().all(axis=None)


@pytest.mark.parametrize("ids", [
    np.tile(np.arange(5, 25), 3),                       # a range: positions by subtraction
    np.tile(np.array([0, 2, 3, 7, 8, 40]), 4),          # gaps in a narrow span: counted
    np.tile(np.array([10**12, 3, 10**15, 77]), 2),      # a wide span: hashed
    np.repeat(np.array([-4, 9, 2]), 3),                 # shuffled, negative
    np.array([5]),
    np.zeros(0, np.int64),
])
def test_image_index_equals_numpy_unique(ids):
    image_ids, position = pie_labels._image_index(ids)
    expected_ids, expected_position = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(image_ids, expected_ids)
    np.testing.assert_array_equal(position, expected_position.reshape(-1))


def test_data_without_records_gives_no_names(tmp_path):
    from pie.analysis import stage_io
    from pie.io.workdir import Workdir
    assert stage_io.eval_record_names(str(tmp_path)) is None  # no dataset.json
    for dataset in ("mnist5k", "digits"):
        records.write_json(Workdir(str(tmp_path)).dataset_config, {"dataset": dataset})
        assert stage_io.eval_record_names(str(tmp_path)) is None

