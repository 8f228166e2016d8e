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


def test_latency_is_a_positive_median(tmp_path):
    path = str(tmp_path / "m.tflite")
    with open(path, "wb") as handle:
        handle.write(pq.convert(_dense_model(8, 16, 4, seed=0), pq.FLOAT_MODE))
    timer = pq.Latency(path)
    for batch_size in (1, 32):
        value = timer.median_ms(batch_size, repeats=3, warmup=1)
        assert np.isfinite(value) and value > 0
    with pytest.raises(pq.QuantizeError, match="repeats must be at least 1, got 0"):
        timer.median_ms(1, repeats=0)


def test_rerun_keeps_rows_of_unchanged_members_only():
    columns = ["member_id", "file_bytes", "repeats", "num_threads", "latency_ms_batch1"]
    previous = pd.DataFrame({"member_id": ["a", "b", "c", "d"], "file_bytes": [10, 20, 30, 40],
                             "repeats": [5, 5, 5, 3], "num_threads": [1, 1, 1, 1],
                             "latency_ms_batch1": [0.1, 0.2, 0.3, 0.4]})
    # b's file changed, c left the manifest, d was timed with other repeats.
    kept = pq.reusable_cost_rows(previous, {"a": 10, "b": 21, "d": 40}, 5, 1, columns)
    assert sorted(kept) == ["a"] and kept["a"]["latency_ms_batch1"] == 0.1
    assert pq.reusable_cost_rows(previous, {"a": 10}, 5, 2, columns) == {}
    assert pq.reusable_cost_rows(previous, {"a": 10}, 5, 1, columns + ["top1"]) == {}
