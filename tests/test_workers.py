import os
import subprocess
import sys

import pytest

from conftest import ROOT
from pie.compress import workers
from pie.io import records


@pytest.mark.parametrize("argv, expected", [
    (["--workdir=W", "--workers=2", "--seeds=4"], 2),
    (["--workers=3", "--seeds=2"], 2),                    # at most one per seed
    (["--workers=1", "--seeds=4"], 1),
    (["--workers=2"], 1),                                 # seeds not given: settled later
    (["--workers", "2", "--seeds=4"], 1),                 # not --name=value
    (["--workers=2", "--seeds=4", "--flagfile=f"], 1),
    (["--workers=2", "--seeds=4", "--strategy=mirrored"], 1),
    (["--workers=2", "--seeds=4", "--strategy=default"], 2),
    (["--workers=2", "--seeds=4", "--seed_slice=0/2"], 1),
    (["--workers=2", "--seeds=4", "--helpfull"], 1),
    (["--workers=two", "--seeds=4"], 1),
])
def test_early_count_reads_only_plain_command_lines(argv, expected):
    assert workers.early_count(argv) == expected


def test_early_count_automatic_is_one_per_core_without_an_nvidia_gpu(monkeypatch):
    monkeypatch.setattr(workers, "_nvidia_gpu", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert workers.early_count(["--workers=0", "--seeds=10"]) == 2
    monkeypatch.setattr(workers, "_nvidia_gpu", lambda: True)
    assert workers.early_count(["--workers=0", "--seeds=10"]) == 1


GATED = ("import sys; sys.path.insert(0, {root!r}); from pie.compress import workers; "
         "workers.await_gate(); print('went')")


@pytest.mark.parametrize("line, went", [("go\n", True), ("stop\n", False), ("", False)])
def test_an_early_worker_goes_only_when_told(line, went):
    process = subprocess.run([sys.executable, "-c", GATED.format(root=ROOT)], input=line,
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, **{workers.GATE_ENV: "1"}))
    assert process.returncode == 0 and process.stderr == ""
    assert process.stdout == ("went\n" if went else "")


def test_lock_without_waiting_says_whether_it_is_held(tmp_path):
    path = str(tmp_path / "member.lock")
    with records.locked(path) as held:
        assert held is True
        # flock locks belong to each opening of the file: this one finds it taken.
        with records.locked(path, wait=False) as second:
            assert second is False
    with records.locked(path, wait=False) as held:
        assert held is True


@pytest.mark.parametrize("code, status, stderr", [
    ("None", 0, ""), ("3", 3, ""), ("'a message'", 1, "a message\n")])
def test_a_finished_stage_exits_with_its_code_and_flushed_output(code, status, stderr):
    script = (f"import sys; sys.path.insert(0, {ROOT!r}); from pie.io import cli; "
              f"print('written', end=''); cli.finished({code})")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60)
    assert (process.returncode, process.stdout, process.stderr) == (status, "written", stderr)
