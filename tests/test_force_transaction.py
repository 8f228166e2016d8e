"""A `--force` run changes nothing unless it succeeds (pie.io.journal).

A real stage (per_class_accuracy.gen_tstatistic, through the same cli entry as a
command) is made to fail after its first write; a real process is killed with
SIGKILL inside a transaction and the next stage start rolls it back; a broken or
hostile journal is one error line and touches nothing outside the workdir.
Workdirs are the hand-made 4-member ones of test_bad_input (no training).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

import pie  # noqa: F401
from pie.io import cli, errors, journal, records
from pie.io.workdir import Workdir
from per_class_accuracy import gen_tstatistic
from pie.analysis import stage_io
from test_bad_input import _make_workdir, snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A workdir with predictions, pie.csv and the per-class test tables written."""
    models = tmp_path_factory.mktemp("models")
    (models / "model.keras").write_bytes(b"never loaded by the analysis stages")
    workdir = _make_workdir(str(tmp_path_factory.mktemp("base") / "w"), str(models))
    cli.call_stage(gen_tstatistic, {"workdir": workdir})
    return workdir


def _copy(analysed, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(analysed, workdir, symlinks=True)
    return workdir


def _with_times(folder):
    """snapshot() plus each file's modification time: a restored file is the original."""
    found = snapshot(folder)
    for key, value in found.items():
        if value[0] == "file":
            found[key] = value + (os.stat(os.path.join(folder, key)).st_mtime_ns,)
    return found


def test_failed_force_run_leaves_every_file_as_it_was(analysed, tmp_path, monkeypatch):
    workdir = _copy(analysed, tmp_path)
    before = _with_times(str(tmp_path))
    replaced = []
    real_replace = journal.replace

    def spy(source, path):
        replaced.append(os.path.relpath(path, workdir))
        real_replace(source, path)
    monkeypatch.setattr(journal, "replace", spy)
    monkeypatch.setattr(stage_io, "write_stamp", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("disk on fire")))
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.call_stage(gen_tstatistic, {"workdir": workdir, "force": True, "alpha": 0.2})
    # The run did replace the tables (and their write record) before it failed ...
    assert {"per_class/tstatistic.csv", "per_class/tstatistic_summary.csv"} <= set(replaced)
    # ... and every file is the original again: bytes, names and modification times.
    assert _with_times(str(tmp_path)) == before
    assert not any(name.startswith(journal.PREFIX) for name in os.listdir(workdir))
    # The restored outputs match their stamp: a plain rerun finds them up to date.
    cli.call_stage(gen_tstatistic, {"workdir": workdir})
    assert _with_times(str(tmp_path)) == before


def test_failed_force_run_removes_what_it_created(analysed, tmp_path, monkeypatch):
    """Outputs that did not exist before (and their new folder) are removed again."""
    workdir = _copy(analysed, tmp_path)
    shutil.rmtree(os.path.join(workdir, "per_class"))
    before = snapshot(str(tmp_path))
    monkeypatch.setattr(stage_io, "write_stamp", lambda *a, **k: (_ for _ in ()).throw(
        errors.ContractError("found late")))
    with pytest.raises(errors.ContractError, match="found late"):
        gen_tstatistic.run(workdir, force=True)  # the Python API joins the same journal
    assert _without_locks(snapshot(str(tmp_path))) == _without_locks(before)


def _without_locks(found):
    """A snapshot less the writers' empty lock files and the folders only they fill:
    rollback leaves locks (removing one another process waits on would break it)."""
    locks = {key for key, value in found.items()
             if key.endswith(".lock") and value[:2] == ("file", 0)}
    kept = {key: value for key, value in found.items() if key not in locks}
    return {key: value for key, value in kept.items() if not (
        value == ("dir",) and all(other in locks for other in found
                                  if other.startswith(key) and other != key))}


def test_successful_force_run_keeps_the_new_outputs_and_no_backups(analysed, tmp_path):
    workdir = _copy(analysed, tmp_path)
    wd = Workdir(workdir)
    before = _with_times(str(tmp_path))
    cli.call_stage(gen_tstatistic, {"workdir": workdir, "force": True})
    after = _with_times(str(tmp_path))
    assert set(after) == set(before)  # no journal folder, no backups, nothing else
    table = os.path.relpath(wd.file("tstatistic"), str(tmp_path))
    assert after[table][-1] != before[table][-1]  # rewritten
    assert after[table][:3] == before[table][:3]  # same inputs, same table


KILLED = """
import os, signal, sys
import pie
from pie.io import journal, records
workdir = sys.argv[1]
with journal.transaction(workdir):
    records.write_text(os.path.join(workdir, "per_class", "tstatistic.csv"), "new\\n")
    records.write_text(os.path.join(workdir, "new_folder", "deep", "made.txt"), "new\\n")
    journal.remove(os.path.join(workdir, "classes.json"))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_force_run_is_rolled_back_at_the_next_start(analysed, tmp_path, capsys):
    workdir = _copy(analysed, tmp_path)
    before = _with_times(str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", KILLED, workdir], cwd=ROOT)
    assert killed.returncode == -9
    left = [name for name in os.listdir(workdir) if name.startswith(journal.PREFIX)]
    assert len(left) == 1  # the journal and its backups survive the kill
    assert os.path.exists(os.path.join(workdir, "new_folder", "deep", "made.txt"))
    capsys.readouterr()
    cli.call_stage(gen_tstatistic, {"workdir": workdir})  # any stage start recovers
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"rolled back the killed --force run {left[0][len(journal.PREFIX):]}: "
                     "restored per_class/tstatistic.csv, classes.json; removed "
                     "new_folder/deep/made.txt"], lines
    assert _with_times(str(tmp_path)) == before


KILLED_STAGE = """
import os, signal, sys
import pie
from pie.analysis import stage_io
from pie.io import cli
from per_class_accuracy import gen_tstatistic
# Killed after the tables were rewritten, before the stage's stamp.
stage_io.write_stamp = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
cli.call_stage(gen_tstatistic, {"workdir": sys.argv[1], "force": True, "alpha": 0.2})
"""


def test_stage_killed_mid_force_run_is_rolled_back_at_the_next_start(analysed, tmp_path,
                                                                     capsys):
    workdir = _copy(analysed, tmp_path)
    before = _with_times(str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", KILLED_STAGE, workdir], cwd=ROOT,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert _with_times(str(tmp_path)) != before  # new tables (alpha 0.2), and the journal
    capsys.readouterr()
    cli.call_stage(gen_tstatistic, {"workdir": workdir})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rolled back the killed --force run "), lines
    restored = lines[0].split(": restored ")[1].split("; removed ")[0].split(", ")
    assert {"per_class/tstatistic.csv", "per_class/tstatistic_summary.csv"} <= set(restored)
    assert _with_times(str(tmp_path)) == before  # and the rerun found it up to date


def _journal(workdir, *entries, owner="otherhost@1"):
    folder = os.path.join(workdir, journal.PREFIX + owner)
    os.makedirs(folder)
    with open(os.path.join(folder, journal.JOURNAL), "w") as handle:
        for entry in ({"journal": journal.FORMAT},) + entries:
            handle.write(json.dumps(entry) + "\n")
    os.utime(folder, (0, 0))  # another host's, a day old: taken for a killed run's
    return folder


@pytest.mark.parametrize("entry, why", [
    ({"op": "created", "path": "../outside.txt"}, "line 2 names a path outside the workdir"),
    ({"op": "created", "path": "/etc/passwd"}, "line 2 names a path outside the workdir"),
    ({"op": "created", "path": "linked/outside.txt"},
     "line 2 names a path outside the workdir"),
    ({"op": "replaced", "path": "classes.json", "backup": "../../outside.txt"},
     "line 2 has a wrong backup"),
    ({"op": "chmod", "path": "classes.json"}, "line 2 is not a journal entry"),
    ("not an entry", "line 2 is not a journal entry"),
])
def test_a_hostile_journal_is_one_line_and_touches_nothing(tmp_path, entry, why):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "classes.json").write_text("[]")
    (tmp_path / "outside.txt").write_text("keep me")
    os.symlink(tmp_path, workdir / "linked")
    folder = _journal(str(workdir), entry)
    before = snapshot(str(tmp_path))
    with pytest.raises(errors.ContractError) as raised:
        cli.tidy_workdir({"workdir": _Flag(str(workdir))})
    assert str(raised.value) == (
        f"{folder}/journal is a broken --force journal ({why}); check the files it lists, "
        f"then remove {folder}")
    assert snapshot(str(tmp_path)) == before


class _Flag:
    def __init__(self, value):
        self.value = value


def test_a_journal_of_a_live_run_is_left_alone(tmp_path):
    """Shards share a workdir: a journal whose writer still runs is not rolled back."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "made.txt").write_text("a live shard's output")
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        _journal(str(workdir), {"op": "created", "path": "made.txt"},
                 owner=f"{journal.owner().split('@')[0]}@{live.pid}")
        assert journal.recover(str(workdir)) == []
        assert (workdir / "made.txt").exists()
    finally:
        live.communicate(b"")
    assert journal.recover(str(workdir)) == [
        f"rolled back the killed --force run {journal.owner().split('@')[0]}@{live.pid}: "
        "restored nothing; removed made.txt"]
    assert os.listdir(workdir) == []


def test_a_replaced_folder_comes_back_whole(tmp_path):
    """generate_pie_dataset's swap of a variant's folder is undone as one folder."""
    workdir = tmp_path / "w"
    (workdir / "pie" / "tfrecords" / "v").mkdir(parents=True)
    (workdir / "pie" / "tfrecords" / "v" / "old.tfrecord").write_bytes(b"old")
    before = snapshot(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with journal.transaction(str(workdir)):
            staging = str(workdir / "pie" / "tfrecords" / "v.partial")
            journal.makedirs(os.path.join(staging, "pie"), scratch=True)
            records.write_text(os.path.join(staging, "pie", "new.tfrecord"), "new")
            journal.replace_folder(staging, str(workdir / "pie" / "tfrecords" / "v"))
            assert os.listdir(workdir / "pie" / "tfrecords" / "v") == ["pie"]
            journal.makedirs(str(workdir / "pie" / "tfrecords" / "w.partial"), scratch=True)
            (workdir / "pie" / "tfrecords" / "w.partial" / "half.tfrecord").write_bytes(b"x")
            raise KeyboardInterrupt
    assert snapshot(str(tmp_path)) == before
