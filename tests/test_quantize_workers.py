"""quantize --workers: members converted in worker processes are the members converted
in the stage's process, byte for byte, with the same manifest rows."""
import os
import shutil

import pandas as pd

from conftest import error_lines, run_stage
from pie.io import records


def test_workers_make_the_same_members(tiny_population, tmp_path):
    workdirs = {}
    for workers in (1, 2):
        workdir = workdirs[workers] = str(tmp_path / f"w{workers}")
        shutil.copytree(tiny_population, workdir)
        run_stage("pie.stages.quantize", f"--workdir={workdir}",
                  "--modes=float16,dynamic_int8,full_int8", "--representative_images=8",
                  f"--workers={workers}")
    manifests = {workers: records.read_manifest(workdir)
                 for workers, workdir in workdirs.items()}
    pd.testing.assert_frame_equal(manifests[1], manifests[2])
    quantized = manifests[1][manifests[1]["method"].str.startswith("quant_")]
    assert len(quantized) == 6  # 2 dense members x 3 modes
    for model_file in quantized["model_file"]:
        contents = []
        for workdir in workdirs.values():
            with open(os.path.join(workdir, model_file), "rb") as handle:
                contents.append(handle.read())
        assert contents[0] == contents[1], model_file


def test_bad_workers_is_one_line(tmp_path):
    result = run_stage("pie.stages.quantize", f"--workdir={tmp_path}", "--workers=-2",
                       check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: --workers must be an integer >= 0 (0 = one per core), got -2"]
    assert os.listdir(tmp_path) == []
