"""Cost figures of a model (pie.compress.quantize): parameters, bytes, gzip bytes, latency."""
import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie.compress import quantize as pq

SPARSITY = 0.9


def _dense_model(inputs, hidden, outputs, seed):
    """A two-layer MLP whose weights (biases included) are all non-zero."""
    import tf_keras as keras
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(hidden),
                              keras.layers.Dense(outputs)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.1, 1.0, w.shape) * rng.choice([-1, 1], w.shape)
                       for w in model.get_weights()])
    return model


def _zero_kernels(model, fraction, seed):
    """A copy with `fraction` of every kernel's entries set to zero (a 90% sparse model)."""
    import tf_keras as keras
    sparse = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    weights = []
    for weight in model.get_weights():
        weight = weight.copy()
        if weight.ndim == 2:
            flat = weight.reshape(-1)
            flat[rng.permutation(flat.size)[:int(round(fraction * flat.size))]] = 0.0
        weights.append(weight)
    sparse.set_weights(weights)
    return sparse


def test_parameter_counts_by_hand():
    model = _dense_model(8, 16, 4, seed=0)
    assert pq.parameter_counts(model) == (8 * 16 + 16 + 16 * 4 + 4,) * 2
    sparse = _zero_kernels(model, SPARSITY, seed=0)
    # Kernels keep 128 - 115 and 64 - 58 entries; biases (16 + 4) are untouched.
    assert pq.parameter_counts(sparse) == (212, (128 - 115) + 16 + (64 - 58) + 4)


def test_sparse_model_is_smaller_after_gzip_only(tmp_path):
    dense = _dense_model(64, 256, 10, seed=1)
    sparse = _zero_kernels(dense, SPARSITY, seed=1)
    sizes = {}
    for name, model in (("dense", dense), ("sparse", sparse)):
        path = str(tmp_path / f"{name}.tflite")
        with open(path, "wb") as handle:
            handle.write(pq.convert(model, pq.FLOAT_MODE))
        sizes[name] = pq.file_sizes(path)
    (dense_bytes, dense_gzip), (sparse_bytes, sparse_gzip) = sizes["dense"], sizes["sparse"]
    assert sparse_bytes == dense_bytes  # zeros are stored like any float
    assert sparse_gzip < 0.5 * dense_gzip  # but they compress


def test_latency_tells_a_slower_model_from_a_fast_one(tmp_path):
    """A model with about 2,000 times the multiply-adds (512-512-512 against 8-16-4)
    takes measurably longer an invoke, and a batch of 32 longer than one image."""
    timers = {}
    for name, model in (("fast", _dense_model(8, 16, 4, seed=0)),
                        ("slow", _dense_model(512, 512, 512, seed=0))):
        path = str(tmp_path / f"{name}.tflite")
        with open(path, "wb") as handle:
            handle.write(pq.convert(model, pq.FLOAT_MODE))
        timers[name] = pq.Latency(path)
    fast = timers["fast"].median_ms(1, repeats=15, warmup=2)
    slow = timers["slow"].median_ms(1, repeats=15, warmup=2)
    assert np.isfinite(fast) and fast > 0
    # Measured on one core of the CI machines: 0.023 ms against 0.0008 ms (the fast
    # model's invoke is overhead), 0.34 ms for a batch of 32.
    assert slow > 5 * fast, (slow, fast)
    assert timers["slow"].median_ms(32, repeats=5, warmup=1) > 2 * slow
    with pytest.raises(pq.QuantizeError, match="repeats must be at least 1, got 0"):
        timers["fast"].median_ms(1, repeats=0)


def test_rerun_keeps_rows_of_unchanged_members_only():
    columns = ["member_id", "file_bytes", "repeats", "num_threads", "latency_ms_batch1",
               "gzip_level"]
    previous = pd.DataFrame({"member_id": ["a", "b", "c", "d", "e"],
                             "file_bytes": [10, 20, 30, 40, 50],
                             "repeats": [5, 5, 5, 3, 5], "num_threads": [1, 1, 1, 1, 1],
                             "latency_ms_batch1": [0.1, 0.2, 0.3, 0.4, 0.5],
                             "gzip_level": [6, 6, 6, 6, 9]})
    # b's file changed, c left the manifest, d was timed with other repeats, e's gzip
    # sizes are of another level.
    kept = pq.reusable_cost_rows(previous, {"a": 10, "b": 21, "d": 40, "e": 50}, 5, 1,
                                 columns)
    assert sorted(kept) == ["a"] and kept["a"]["latency_ms_batch1"] == 0.1
    assert pq.reusable_cost_rows(previous, {"a": 10}, 5, 2, columns) == {}
    assert pq.reusable_cost_rows(previous, {"a": 10}, 5, 1, columns + ["top1"]) == {}
