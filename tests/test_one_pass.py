"""Each member runs once over many distributions / noise levels, with the same results.

The corruption and noise-similarity stages gather the inputs of several
distributions (or eps levels) into one model call per member; these tests count
the calls of stand-in members and compare the outputs with a run per distribution.
"""
import numpy as np
import pandas as pd

from pie.analysis import robustness
from pie.io.workdir import Workdir
from pie.models import predict
from robustness_tests import corruptions as stage
from robustness_tests import noise_similarity

N_CLASSES = 7


class CountingMember:
    """A linear stand-in model that counts its calls and the images it saw."""

    def __init__(self, seed):
        self.weights = np.random.default_rng(seed).normal(size=(12, N_CLASSES))
        self.calls = []

    def logits(self, inputs, batch_size):
        self.calls.append(len(inputs))
        return np.asarray(inputs, np.float64).reshape(len(inputs), -1) @ self.weights


class Loaded:
    """Stands in for corruptions.Members: hands out the stand-ins by member_id."""

    def __init__(self, members):
        self.members = members

    def get(self, row):
        return self.members[row["member_id"]]


def chunks(distribution_seed, sizes):
    """(raw images, labels, ids) chunks of one distribution."""
    rng = np.random.default_rng(distribution_seed)
    start = 0
    for size in sizes:
        ids = np.arange(start, start + size)
        yield rng.random((size, 3, 4)).astype(np.float32), ids % N_CLASSES, ids
        start += size


PLAN = [("fog/1", ["a", "b"]), ("fog/2", ["a", "b"]), ("snow/1", ["a"])]


def run(workdir, block_bytes):
    members = {"a": CountingMember(0), "b": CountingMember(1)}
    written = []
    jobs = ((name, [{"member_id": m} for m in ids], chunks(k, [5, 3]))
            for k, (name, ids) in enumerate(PLAN))
    stage.predict_distributions(workdir, jobs, Loaded(members), lambda x: 2 * x, 4,
                                done=lambda name, rows, top1: written.append(name),
                                block_bytes=block_bytes)
    return members, written


def expected_frame(member, member_id, k, name):
    parts = [predict.predictions_frame(member_id, member.logits(2 * images, 4), labels, ids)
             for images, labels, ids in chunks(k, [5, 3])]
    return pd.concat(parts, ignore_index=True).assign(distribution=name)


def test_corruption_members_run_once_over_every_distribution(tmp_path):
    workdir = str(tmp_path)
    members, written = run(workdir, block_bytes=1 << 30)
    # One call each: a over the 3 distributions' 8 images, b over the 2 it needs.
    assert members["a"].calls == [24] and members["b"].calls == [16]
    assert written == [name for name, _ in PLAN]
    for k, (name, ids) in enumerate(PLAN):
        for member_id in ids:
            frame = pd.read_parquet(Workdir(workdir).predictions_path(member_id, name))
            reference = CountingMember(0 if member_id == "a" else 1)
            pd.testing.assert_frame_equal(frame, expected_frame(reference, member_id, k, name),
                                          check_dtype=False)
    assert not (tmp_path / "predictions" / "test" / "snow-1" / "b.parquet").exists()


def test_small_blocks_give_the_same_files(tmp_path):
    big, small = str(tmp_path / "big"), str(tmp_path / "small")
    run(big, block_bytes=1 << 30)
    members, written = run(small, block_bytes=1)  # every chunk its own block
    assert members["a"].calls == [5, 3] * 3 and members["b"].calls == [5, 3] * 2
    assert written == [name for name, _ in PLAN]
    for name, ids in PLAN:
        for member_id in ids:
            pd.testing.assert_frame_equal(
                pd.read_parquet(Workdir(small).predictions_path(member_id, name)),
                pd.read_parquet(Workdir(big).predictions_path(member_id, name)))


def test_noise_levels_share_model_calls(monkeypatch):
    inputs = np.random.default_rng(3).random((6, 12)).astype(np.float32)
    eps_values, draws, seed = [0.0, 0.1, 0.3], 4, 5
    units = noise_similarity.noise_units(eps_values, draws)
    assert len(units) == 1 + 4 + 4
    expected = {}
    for eps in eps_values:
        member = CountingMember(0)
        probs = np.stack([
            predict.softmax(member.logits(inputs + np.float32(eps) * robustness.uniform_noise(
                inputs.shape, seed, draw), 4))
            for draw in range(1 if eps == 0 else draws)])
        expected[eps] = (probs.argmax(axis=-1), probs)
    for chunk_units, calls in ((100, 1), (2, 5)):
        monkeypatch.setattr(noise_similarity, "CHUNK_BYTES", chunk_units * inputs.nbytes)
        models = {"a": CountingMember(0)}
        got = list(noise_similarity.noisy_outputs(models, inputs, eps_values, draws, seed, 4))
        assert len(models["a"].calls) == calls
        assert sum(models["a"].calls) == len(units) * len(inputs)
        assert [eps for eps, _ in got] == eps_values
        for eps, outputs in got:
            predicted, probs = outputs["a"]
            np.testing.assert_array_equal(predicted, expected[eps][0])
            np.testing.assert_allclose(probs, expected[eps][1], rtol=1e-12)


class StreamedSource:
    """An eval set too large to hold: batches of 4 of 10 images, streamed."""

    def __init__(self):
        rng = np.random.default_rng(9)
        self.images = rng.random((10, 3, 4)).astype(np.float32)

    def eval_batches(self, batch_size):
        images = self.images

        class Batches:
            def as_numpy_iterator(self):
                for start in range(0, len(images), batch_size):
                    ids = np.arange(start, min(start + batch_size, len(images)))
                    yield {"inputs": images[ids], "label": ids % N_CLASSES, "image_id": ids}
        return Batches()


def test_streamed_eval_set_runs_in_few_calls():
    source = StreamedSource()
    expected = CountingMember(0).logits(source.images, 4)
    for call_bytes, calls in ((1 << 30, [10]), (1, [4, 4, 2]), (8 * 12 * 4, [8, 2])):
        member = CountingMember(0)
        logits, labels, ids = predict.member_logits(member, source, None, 4, call_bytes)
        assert member.calls == calls
        np.testing.assert_allclose(logits, expected, rtol=1e-12)
        assert ids.tolist() == list(range(10)) and labels.tolist() == [i % N_CLASSES
                                                                        for i in range(10)]
