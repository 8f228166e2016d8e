import numpy as np
import pytest

from pie.compress import pruning, training
from pie.data import sources
from pie.io import errors


def test_plan_names_members_and_slices_shards():
    members = training.plan([0.0, 0.5], seeds=2, method="magnitude", shard=(0, 1))
    assert [m.member_id for m in members] == [
        "dense_0_seed0", "dense_0_seed1", "magnitude_0.5_seed0", "magnitude_0.5_seed1"]
    assert members[2].relpath == "checkpoints/magnitude/sparsity_0.5/seed_0"
    shards = [training.plan([0.0, 0.5], 2, "magnitude", (i, 3)) for i in range(3)]
    ids = [m.member_id for shard in shards for m in shard]
    assert sorted(ids) == sorted(m.member_id for m in members)  # each member exactly once


def test_reference_samples_draw_per_class_counts_reproducibly():
    source = sources.load("digits")
    x, y = training.reference_samples(source, 3, seed=1)
    assert x.shape == (30, 8, 8, 1) and np.bincount(y).tolist() == [3] * 10
    x2, y2 = training.reference_samples(source, 3, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = training.reference_samples(source, 3, seed=2)
    assert not np.array_equal(x, x3)


def test_unit_mask_round_trip_and_check(tmp_path):
    mask = {"dense1": np.array([True, False, True, False]), "conv1": np.array([True, True])}
    path = str(tmp_path / "mask.npz")
    training.write_mask(path, mask)
    back = training.load_mask(path)
    assert set(back) == set(mask) and all(np.array_equal(back[k], mask[k]) for k in mask)
    training.check_unit_sparsity(mask, 1 / 3)  # 2 of 6 units: exact
    with pytest.raises(pruning.PruningError,
                       match="removed 0.3333 of the units, not the target 0.5"):
        training.check_unit_sparsity(mask, 0.5)


def test_strategy_errors(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(errors.UsageError, match="--strategy=multi_worker needs the TF_CONFIG"):
        training.make_strategy("multi_worker", None)
    with pytest.raises(errors.UsageError, match="--strategy=tpu needs --tpu=<name or address>"):
        training.make_strategy("tpu", None)
    assert training.is_chief(training.make_strategy("default", None))
