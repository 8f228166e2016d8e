"""--shard=i/n of the per-member stages: two shards run at once into one workdir
give the files of one unsharded run, byte for byte but for the documented
timestamps and timings (docs/contracts.md, "Shards")."""
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from pie.compress import training
from pie.io import cli, errors, shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stages run by two concurrent shard processes, in study order, with small settings.
CONCURRENT = [
    ("pie_dataset_gen.predictions", {}),
    ("robustness_tests.corruptions", {"corruptions": "gaussian_noise", "severities": "1",
                                      "workers": 1}),
    ("robustness_tests.noise_similarity", {"eps": "0,0.2", "draws": 2, "images": 40}),
    ("robustness_tests.informative_features", {"images": 8}),
]
# What differs between two runs of the same work: files' modification times in
# stamps, the wall time of a conversion.
TIMINGS = {"mtime_ns", "wall_time_s"}


def run_stages(stages, workdir, shard=None, barrier=None):
    """Runs `stages` in this process (as shard `shard`); after each stage, waits until
    every shard has finished it (as an array job's next stage waits for the array)."""
    import importlib
    for module, values in stages:
        values = dict(values, workdir=workdir, shard=shard)
        cli.call_stage(importlib.import_module(module), values)
        if barrier:
            index, count = shards.parse(shard)
            name = module.rsplit(".", 1)[1]
            open(os.path.join(barrier, f"{name}.{index}"), "w").close()
            while not all(os.path.exists(os.path.join(barrier, f"{name}.{other}"))
                          for other in range(count)):
                time.sleep(0.05)


def without_timings(value):
    """A stamp or meta.json without modification times and wall times (an input's
    fingerprint, [size, mtime_ns], keeps its size)."""
    if not isinstance(value, dict):
        return value
    return {key: ({name: item and item[0] for name, item in item.items()} if key == "inputs"
                  else without_timings(item))
            for key, item in value.items() if key not in TIMINGS}


def files(workdir):
    """{relative path: content} of every file of a workdir: stamps and meta.json
    without timings, the workdir's own path (in flags files) as W."""
    found = {}
    for folder, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, workdir)
            if name.endswith(".stamp.json") or name == "meta.json":
                with open(path) as handle:
                    found[relative] = without_timings(json.load(handle))
            else:
                with open(path, "rb") as handle:
                    found[relative] = handle.read().replace(workdir.encode(), b"W")
    return found


def assert_same_files(one, two):
    expected, got = files(one), files(two)
    assert sorted(got) == sorted(expected)
    assert [path for path in expected if got[path] != expected[path]] == []


@pytest.fixture
def two_workdirs(tiny_population, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    shutil.copytree(tiny_population, one)
    shutil.copytree(tiny_population, two)
    return one, two


def test_select_divides_like_training():
    members = training.plan([0.0, 0.5, 0.9], 3, "magnitude", (0, 1))
    parts = [training.plan([0.0, 0.5, 0.9], 3, "magnitude", (i, 2)) for i in range(2)]
    assert [m.member_id for m in parts[0]] == [m.member_id for m in members[0::2]]
    assert [m.member_id for m in parts[1]] == [m.member_id for m in members[1::2]]
    assert shards.select(list("abcde"), (1, 3)) == ["b", "e"]
    assert [shards.count(5, (i, 3)) for i in range(3)] == [2, 2, 1]


@pytest.mark.parametrize("text", ["2/2", "a/b", "1", "-1/2"])
def test_bad_shard_is_one_line(text):
    with pytest.raises(errors.UsageError) as error:
        shards.parse(text)
    assert str(error.value) == f"--shard must be i/n with integers 0 <= i < n, got '{text}'"


def test_flags_file_leaves_out_the_shard():
    assert shards.flags_text("--force\n--shard=1/4\n--workdir=W\n") == "--force\n--workdir=W\n"


def test_two_concurrent_shards_equal_one_run(two_workdirs, tmp_path):
    one, two = two_workdirs
    for workdir in two_workdirs:  # training wrote them: predictions makes them again
        shutil.rmtree(os.path.join(workdir, "predictions", "test", "clean"))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    code = ("import sys; sys.path.insert(0, 'tests'); import test_shard; test_shard."
            "run_stages(test_shard.CONCURRENT, sys.argv[1], sys.argv[2], sys.argv[3])")
    processes = [subprocess.Popen([sys.executable, "-c", code, two, f"{i}/2", str(barrier)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for i in range(2)]
    run_stages(CONCURRENT, one)  # meanwhile, the unsharded run in this process
    logs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(logs)
    # Each shard ran its own members: manifest members 0, 2 and 1, 3.
    assert "predictions: 2 members in shard 0/2, 0 done, 2 to run" in logs[0]
    assert "predictions: 2 members in shard 1/2, 0 done, 2 to run" in logs[1]
    assert "corruptions: 1 corrupted sets x 2 members in shard 1/2" in logs[1]
    # Of each table, one shard kept its rows as parts, the other wrote the table.
    for stage in ("noise_similarity", "informative_features"):
        assert sum(f"{stage}: rows of shard" in log for log in logs) == 1, stage
        assert os.listdir(os.path.join(two, "robustness", shards.PARTS_DIR, stage)) == []
    assert_same_files(one, two)


def test_quantize_and_cost_shards_equal_one_run(two_workdirs, monkeypatch, capsys):
    """Shards run one after the other here; each conversion is made once (a cache)
    and cost's measurement is a stand-in (latencies are timings): the sharding, not
    the measuring, is under test."""
    from pie.compress import quantize as pq
    from pie.stages import cost
    one, two = two_workdirs
    converted, measured_ids = {}, []

    def convert_once(model, mode, *args, **kwargs):
        key = (model.to_json(), tuple(w.tobytes() for w in model.get_weights()), str(mode))
        if key not in converted:
            converted[key] = pq_convert(model, mode, *args, **kwargs)
        return converted[key]

    def measured(workdir, row, weights, repeats, warmup, num_threads, keras_cost=None):
        measured_ids.append(row["member_id"])
        return {"member_id": row["member_id"], "method": row["method"],
                "sparsity": row["sparsity"], "seed": row["seed"], "top1": row["top1"],
                "params": len(row["member_id"]), "file_bytes": int(row["seed"]) + 1,
                "gzip_bytes": 1, "latency_ms_batch1": float(row["sparsity"]) / 3,
                "latency_ms_batch32": 0.5, "repeats": repeats,
                "num_threads": num_threads, "gzip_level": 6}

    pq_convert = pq.convert
    monkeypatch.setattr(pq, "convert", convert_once)
    monkeypatch.setattr(cost, "measure", measured)
    monkeypatch.setattr(cost, "keras_costs", lambda *args: {})  # no conversion to time
    # One process: the conversions counted here are this process's (no worker's).
    stages = [("pie.stages.quantize", {"modes": "float16", "workers": 1}),
              ("pie.stages.cost", {})]
    run_stages(stages, one)
    unsharded, measured_ids[:] = list(measured_ids), []
    capsys.readouterr()
    for module, values in stages:
        for index in range(2):
            run_stages([(module, values)], two, f"{index}/2")
    assert_same_files(one, two)
    output = capsys.readouterr().out
    assert "quantize: 1 conversions in shard 0/2" in output
    assert "quantize: 1 conversions in shard 1/2" in output
    assert "cost: rows of shard 0/2 kept" in output
    # Each member measured once, by the shard of its position in the manifest.
    assert measured_ids == unsharded[0::2] + unsharded[1::2] and len(unsharded) == 6
    assert len(converted) == 2  # the two dense members, each converted once


def test_parts_of_one_run_make_the_table(tmp_path):
    """A part of another run (other key) is never combined; the shard that completes
    the set gets every shard's rows, values and types as written, and the parts go."""
    import numpy as np
    out = str(tmp_path)
    frames = [pd.DataFrame({"member_id": ["a", "c"], "value": [0.1, np.nan],
                            "seed": [0, 2], "kept": [True, False]}),
              pd.DataFrame({"member_id": ["b"], "value": [1 / 3], "seed": [1],
                            "kept": [True]})]
    with shards.gathered(out, "stage", (0, 2), {"options": 1}, {"rows": frames[0]}) as parts:
        assert parts is None
    with shards.gathered(out, "stage", (1, 2), {"options": 2}, {"rows": frames[1]}) as parts:
        assert parts is None  # shard 0's part is of another run
    with shards.gathered(out, "stage", (1, 2), {"options": 1}, {"rows": frames[1]}) as parts:
        assert len(parts["rows"]) == 2
        for got, wrote in zip(parts["rows"], frames):
            pd.testing.assert_frame_equal(got, wrote, check_exact=True)
    assert os.listdir(os.path.join(out, shards.PARTS_DIR, "stage")) == []
