"""cost --workers: the Keras members converted in worker processes give the table of
the stage's own process, every column but the timings; bad input is the same one line."""
import os
import shutil
import zipfile

import pandas as pd
import pytest

from conftest import error_lines, problem_lines, run_stage
from pie.io import records
from pie.io.workdir import Workdir

# The timings: the only columns that may differ between two runs.
LATENCY_COLUMNS = ["latency_ms_batch1", "latency_ms_batch32"]
FAST = ["--repeats=2", "--warmup=0"]


@pytest.fixture(scope="module")
def with_tflite(tiny_population, tmp_path_factory):
    """The tiny population (4 Keras members) and the float16 TFLite of its dense ones
    (their params come from their Keras source, converted in a worker or not)."""
    workdir = str(tmp_path_factory.mktemp("cost_pool") / "w")
    shutil.copytree(tiny_population, workdir)
    run_stage("pie.stages.quantize", f"--workdir={workdir}", "--modes=float16")
    return workdir


def cost_table(workdir, workers):
    result = run_stage("pie.stages.cost", f"--workdir={workdir}", *FAST, "--force",
                       f"--workers={workers}")
    return pd.read_csv(os.path.join(workdir, "quantization", "cost.csv")), result


def test_workers_change_no_column_but_the_timings(with_tflite):
    manifest = records.read_manifest(with_tflite)
    serial, _ = cost_table(with_tflite, 1)
    pooled, result = cost_table(with_tflite, 2)
    assert serial["member_id"].tolist() == sorted(manifest["member_id"]) and len(serial) == 6
    assert (serial["latency_model"] == "float_tflite").sum() == 4
    pd.testing.assert_frame_equal(serial.drop(columns=LATENCY_COLUMNS),
                                  pooled.drop(columns=LATENCY_COLUMNS))
    assert (pooled[LATENCY_COLUMNS] > 0).all().all()
    # A progress line per member, as without workers.
    for member_id in manifest["member_id"]:
        assert f"{member_id}: " in result.stderr


def test_bad_workers_is_one_line_and_nothing_written(tmp_path, tiny_population):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_population, workdir)
    result = run_stage("pie.stages.cost", f"--workdir={workdir}", "--workers=-1",
                       check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: --workers must be an integer >= 0 (0 = one per core), got -1"]
    assert not os.path.exists(os.path.join(workdir, "quantization"))


def truncate_weights(path):
    """A .keras file the gate lets through (a zip of the three entries, a config of
    allowed layers) whose weights file is cut in half: loading it fails."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, content in entries:
            if info.filename == "model.weights.h5":
                content = content[:len(content) // 2]
            archive.writestr(info, content)


@pytest.mark.parametrize("broken", [0, 3])  # the first member to convert, or the last
def test_a_model_that_fails_to_load_is_the_same_line_with_workers(tmp_path, tiny_population,
                                                                   broken):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_population, workdir)
    row = records.read_manifest(workdir).to_dict("records")[broken]
    path = Workdir(workdir).model_path(row)
    truncate_weights(path)
    lines = []
    for workers in (1, 2):
        result = run_stage("pie.stages.cost", f"--workdir={workdir}", *FAST,
                           f"--workers={workers}", check=False)
        assert result.returncode == 2
        assert error_lines(result)[-1].startswith("error: ")  # last, after any progress
        lines.append(problem_lines(result))
        assert not os.path.exists(os.path.join(workdir, "quantization", "cost.csv"))
    assert lines[0] == lines[1]
    assert len(lines[0]) == 1
    assert lines[0][0].startswith(f"error: manifest member {row['member_id']}: cannot load "
                                  f"model {path}: ")


def test_weights_only_copies_do_not_depend_on_when_they_are_saved(tmp_path):
    import tf_keras as keras
    from pie.stages import cost
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    first, second = str(tmp_path / "a.keras"), str(tmp_path / "b.keras")
    model.save(first)
    model.save(second)
    with zipfile.ZipFile(second) as archive:  # as if saved years before
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(second, "w") as archive:
        for info, content in entries:
            info.date_time = (2001, 2, 3, 4, 5, 6)
            archive.writestr(info, content.replace(b'"date_saved": "2', b'"date_saved": "1'))
    with open(first, "rb") as a, open(second, "rb") as b:
        assert a.read() != b.read()
    sizes = os.path.getsize(first)
    for path in (first, second):
        cost.undated(path)
        assert os.path.getsize(path) == sizes  # the bytes counted stay as many
    with open(first, "rb") as a, open(second, "rb") as b:
        assert a.read() == b.read()
    assert keras.models.load_model(first).get_weights()[0].shape == (4, 3)
