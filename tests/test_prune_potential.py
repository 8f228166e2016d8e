"""The headline prune potential: per-seed values, mean +- std, shifted mean and minimum."""
import math
import statistics

import pandas as pd
from scipy import stats as scipy_stats
import pytest

from pie.analysis import robustness


def member_table(rows):
    """Accuracy table from (method, sparsity, seed, distribution, top1) tuples."""
    frame = pd.DataFrame(rows, columns=["method", "sparsity", "seed", "distribution", "top1"])
    frame["member_id"] = (frame["method"] + "_" + frame["sparsity"].map("{:g}".format)
                          + "_seed" + frame["seed"].astype(str))
    frame["n_images"] = 100
    return frame


# Errors in points in the comments (err = 100 x (1 - top1)), delta = 0.5.
ROWS = [
    # clean: seed 0 dense 10, seed 1 dense 8.
    ("dense", 0.0, 0, "clean", 0.900), ("dense", 0.0, 1, "clean", 0.920),
    ("magnitude", 0.5, 0, "clean", 0.906), ("magnitude", 0.5, 1, "clean", 0.914),  # 9.4 8.6
    ("magnitude", 0.9, 0, "clean", 0.898), ("magnitude", 0.9, 1, "clean", 0.910),  # 10.2 9.0
    # fog/3: dense 20, 14; magnitude 0.5 20.3 (passes), 20 (fails); 0.9 fails both.
    ("dense", 0.0, 0, "fog/3", 0.80), ("dense", 0.0, 1, "fog/3", 0.86),
    ("magnitude", 0.5, 0, "fog/3", 0.797), ("magnitude", 0.5, 1, "fog/3", 0.80),
    ("magnitude", 0.9, 0, "fog/3", 0.70), ("magnitude", 0.9, 1, "fog/3", 0.70),
    # contrast/2: dense 30, 30; every variant passes for seed 1, only 0.5 for seed 0.
    ("dense", 0.0, 0, "contrast/2", 0.70), ("dense", 0.0, 1, "contrast/2", 0.70),
    ("magnitude", 0.5, 0, "contrast/2", 0.70), ("magnitude", 0.5, 1, "contrast/2", 0.70),
    ("magnitude", 0.9, 0, "contrast/2", 0.60), ("magnitude", 0.9, 1, "contrast/2", 0.70),
]
# P(seed, D) by hand:   clean  fog/3  contrast/2
#   seed 0               0.9    0.5    0.5
#   seed 1               0.0    0.0    0.9


def test_per_seed_values():
    per_seed = robustness.prune_potential_per_seed(member_table(ROWS), 0.5)
    got = per_seed.set_index(["distribution", "seed"])["prune_potential"].to_dict()
    assert got == {("clean", 0): 0.9, ("clean", 1): 0.0, ("contrast/2", 0): 0.5,
                   ("contrast/2", 1): 0.9, ("fog/3", 0): 0.5, ("fog/3", 1): 0.0}


def test_summary_is_one_row_per_method_with_mean_std_and_minimum():
    accuracy = robustness.with_mean_corruption(member_table(ROWS))
    summary = robustness.prune_potential_summary(accuracy, 0.5)
    assert list(summary.columns) == robustness.PRUNE_POTENTIAL_SUMMARY_COLUMNS
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row["method"], row["delta"], row["n_seeds"], row["n_shifted"]) == (
        "magnitude", 0.5, 2, 2)  # mean_corruption is not a shift of its own
    assert row["clean_mean"] == pytest.approx(0.45)
    assert row["clean_std"] == pytest.approx(statistics.stdev([0.9, 0.0]))
    # Per seed, the mean over the shifts: seed 0 (0.5 + 0.5) / 2, seed 1 (0 + 0.9) / 2.
    assert row["shifted_mean"] == pytest.approx(statistics.mean([0.5, 0.45]))
    assert row["shifted_std"] == pytest.approx(statistics.stdev([0.5, 0.45]))
    # Seed means per shift: fog 0.25, contrast 0.7; the minimum is fog's.
    assert row["shifted_min"] == pytest.approx(0.25)
    assert row["shifted_min_distribution"] == "fog/3"
    # The population-mean value differs: it is not the headline.
    potential = robustness.prune_potential(accuracy, 0.5)
    clean = potential[potential["distribution"] == "clean"]["prune_potential"].item()
    assert clean == 0.5 != row["clean_mean"]


def test_without_shifts_the_shifted_summary_is_empty():
    clean_only = [row for row in ROWS if row[3] == "clean"]
    row = robustness.prune_potential_summary(member_table(clean_only), 0.5).iloc[0]
    assert row["n_shifted"] == 0
    assert math.isnan(row["shifted_mean"]) and math.isnan(row["shifted_min"])
    assert row["clean_mean"] == pytest.approx(0.45)


def test_clean_minus_shifted_per_seed_with_a_paired_test():
    # Four seeds: seeds 2 and 3 are copies of seeds 0 and 1, so P(seed, D) is known.
    rows = ROWS + [(m, s, seed + 2, d, t) for m, s, seed, d, t in ROWS]
    row = robustness.prune_potential_summary(member_table(rows), 0.5).iloc[0]
    clean = [0.9, 0.0, 0.9, 0.0]
    shifted = [0.5, 0.45, 0.5, 0.45]
    d = [c - s for c, s in zip(clean, shifted)]
    expected = scipy_stats.ttest_rel(clean, shifted)
    assert row["n_paired_seeds"] == 4
    assert row["difference_mean"] == pytest.approx(statistics.mean(d))
    assert row["difference_std"] == pytest.approx(statistics.stdev(d))
    assert row["difference_p_value"] == pytest.approx(expected.pvalue)
    interval = expected.confidence_interval()
    assert (row["difference_ci_low"], row["difference_ci_high"]) == (
        pytest.approx(interval.low), pytest.approx(interval.high))
    assert row["n_seeds_lower_shifted"] == 2 and row["ci_approximate"]
    assert row["differences_per_seed"] == "0:+0.4 1:-0.45 2:+0.4 3:-0.45"


def test_monotone_needs_every_lower_sparsity_to_pass():
    # contrast/2, seed 0: 0.5 passes and 0.9 fails; seed 1 both pass. Make 0.5 fail and
    # 0.9 pass for seed 1 on clean: the largest passing is 0.9, the monotone one 0.
    rows = [r for r in ROWS if not (r[3] == "clean" and r[2] == 1 and r[0] == "magnitude")]
    rows += [("magnitude", 0.5, 1, "clean", 0.900), ("magnitude", 0.9, 1, "clean", 0.918)]
    plain = robustness.prune_potential_per_seed(member_table(rows), 0.5)
    monotone = robustness.prune_potential_per_seed(member_table(rows), 0.5, monotone=True)
    key = lambda t: t.set_index(["distribution", "seed"])["prune_potential"].to_dict()
    assert key(plain)[("clean", 1)] == 0.9 and key(monotone)[("clean", 1)] == 0.0
    # Where the lower sparsity passes, both rules agree.
    assert key(plain)[("contrast/2", 1)] == key(monotone)[("contrast/2", 1)] == 0.9
    summary = robustness.prune_potential_summary(member_table(rows), 0.5, monotone=True)
    assert bool(summary["monotone"].iloc[0])
