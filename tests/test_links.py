"""No path through a link, bounded reads, concurrent PIE datasets (issue 23: 2, 4, 6).

Each folder, table, lock and checkpoint-state file a stage touches is replaced by a
link to a folder outside the workdir (and files and locks by a FIFO): the stage or
library call stops with one line naming it, and the outside folder is exactly as it
was (nothing written, deleted or replaced there). Most cases run in-process on the
hand-made workdir of test_bad_input (no training); the commands run on copies of it
or of `tiny_predictions`.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pie  # noqa: F401
from conftest import ROOT, error_lines, run_stage
from per_class_accuracy import gen_tstatistic
from pie.io import bounded_json, checkpoint_state, errors, journal, records, safe_paths
from pie.io.workdir import Workdir
from test_bad_input import _make_workdir, snapshot

RULE = safe_paths.RULE


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The hand-made 4-member workdir with predictions, pie.csv and per-class tables."""
    models = tmp_path_factory.mktemp("models")
    (models / "model.keras").write_bytes(b"never loaded by the analysis stages")
    workdir = _make_workdir(str(tmp_path_factory.mktemp("made") / "w"), str(models))
    gen_tstatistic.run(workdir)
    return workdir


@pytest.fixture
def setup(made, tmp_path):
    """(W, outside): a copy of the workdir, and a folder beside it holding a file."""
    workdir = str(tmp_path / "w")
    shutil.copytree(made, workdir, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("outside the workdir")
    return workdir, str(outside)


def link_out(workdir, outside, relative):
    """Moves W/relative's content outside (when any) and links W/relative there."""
    path = os.path.join(workdir, relative)
    target = os.path.join(outside, "moved-" + relative.replace("/", "-"))
    if os.path.lexists(path):
        shutil.move(path, target)
    else:
        os.makedirs(target)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    return path


def fifo_in(workdir, relative):
    path = os.path.join(workdir, relative)
    if os.path.lexists(path):
        os.remove(path)
    os.mkfifo(path)
    return path


def refusal(result):
    """The `error:` lines of a command (its progress and log lines left out)."""
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in error_lines(result) if line.startswith("error")]


def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------- output folders


OUTPUT_FOLDERS = ["per_class", "report", "predictions", "robustness", "quantization", "pie",
                  "pie/tfrecords", "checkpoints"]


@pytest.mark.parametrize("folder", OUTPUT_FOLDERS)
def test_a_linked_output_folder_is_refused_before_anything_is_written(setup, folder):
    """Every writer of pie.io (atomic writes, folders, locks, the journal) refuses the
    folder, with the outside folder untouched."""
    workdir, outside = setup
    wd = Workdir(workdir)
    path = link_out(workdir, outside, folder)
    before = snapshot(outside)
    expected = f"{path} is a symbolic link: {RULE}"
    inside = os.path.join(path, "sub", "table.csv")
    calls = [lambda: records.write_csv(inside, pd.DataFrame({"a": [1]})),
             lambda: records.write_json(os.path.join(path, "x.json"), {}),
             lambda: wd.output_folder(os.path.join(path, "sub")),
             lambda: journal.makedirs(os.path.join(path, "sub")),
             lambda: journal.remove(os.path.join(path, "keep.txt")),
             lambda: records.locked(os.path.join(path, ".lock")).__enter__(),
             lambda: records.read_csv(os.path.join(path, "table.csv"))]
    for call in calls:
        with pytest.raises(errors.ContractError) as raised:
            with journal.transaction(workdir):
                call()
        assert one_line(raised) == expected
    assert snapshot(outside) == before


def test_linked_per_class_stops_the_stage_in_one_line(setup):
    workdir, outside = setup
    path = link_out(workdir, outside, "per_class")
    before = snapshot(outside)
    with pytest.raises(errors.ContractError) as raised:
        gen_tstatistic.run(workdir, force=True)
    assert one_line(raised) == f"{path} is a symbolic link: {RULE}"
    assert snapshot(outside) == before


def test_linked_report_folder_stops_the_report(setup):
    from pie.report import build
    workdir, outside = setup
    path = link_out(workdir, outside, "report")
    before = snapshot(outside)
    with pytest.raises(errors.ContractError) as raised:
        build.build_report(workdir, fmt="html", log=lambda message: None)
    assert one_line(raised) == f"{path} is a symbolic link: {RULE}"
    assert snapshot(outside) == before


def test_linked_pie_folder_stops_the_pie_table_command(setup):
    workdir, outside = setup
    path = link_out(workdir, outside, "pie")
    before = snapshot(outside)
    result = run_stage("pie_dataset_gen.aggregate_predictions", f"--workdir={workdir}",
                       "--force", check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert refusal(result) == [f"error: {path} is a symbolic link: {RULE}"]
    assert snapshot(outside) == before


# --------------------------------------------------------------- input tables


INPUTS = {
    "classes.json": lambda wd: gen_tstatistic.run(wd.root, force=True),
    "dataset.json": lambda wd: records.read_dataset_config(wd),
    "population.csv": lambda wd: records.read_manifest(wd),
    "predictions/test/clean/dense_0_seed0.parquet":
        lambda wd: records.read_prediction_file(wd.predictions_path("dense_0_seed0")),
    "per_class/.gen_tstatistic.stamp.json":
        lambda wd: records.check_written(wd.file("tstatistic")),
    "pie/pie.csv": lambda wd: records.read_csv(wd.file("pie")),
}


@pytest.mark.parametrize("relative", INPUTS)
def test_a_linked_input_file_is_not_read(setup, relative):
    workdir, outside = setup
    path = os.path.join(workdir, relative)
    target = os.path.join(outside, "moved")
    shutil.copy(path, target)
    os.remove(path)
    os.symlink(target, path)
    before = snapshot(outside)
    with pytest.raises(errors.ContractError) as raised:
        INPUTS[relative](Workdir(workdir))
    assert one_line(raised) == f"{path} is a symbolic link: {RULE}"
    assert snapshot(outside) == before


@pytest.mark.parametrize("relative", INPUTS)
def test_a_fifo_in_place_of_an_input_file_is_not_opened(setup, relative):
    """A FIFO would block the stage forever on open: refused without opening it."""
    workdir, outside = setup
    path = fifo_in(workdir, relative)
    with pytest.raises(errors.ContractError) as raised:
        INPUTS[relative](Workdir(workdir))
    assert one_line(raised) == f"{path} is a FIFO: only regular files are read"


def test_classes_json_linked_makes_the_command_exit_2(setup):
    workdir, outside = setup
    target = os.path.join(outside, "classes.json")
    with open(target, "w") as handle:
        json.dump([f"outside {k}" for k in range(10)], handle)
    os.remove(os.path.join(workdir, "classes.json"))
    os.symlink(target, os.path.join(workdir, "classes.json"))
    result = run_stage("per_class_accuracy.gen_tstatistic", f"--workdir={workdir}", "--force",
                       check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert refusal(result) == [
        f"error: {workdir}/classes.json is a symbolic link: {RULE}"]
    with open(os.path.join(workdir, "per_class", "tstatistic.csv")) as handle:
        assert "outside" not in handle.read()


# ------------------------------------------------------------------------ locks


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_the_manifest_lock_is_never_opened_through_a_link_or_a_fifo(setup, kind):
    workdir, outside = setup
    lock = Workdir(workdir).manifest_lock
    target = os.path.join(outside, "created-by-lock")
    os.remove(lock)  # (the copy's own, left by the writers of the manifest)
    if kind == "link":
        os.symlink(target, lock)  # dangling: opening through it would create the file
        expected = f"{lock} is a symbolic link: {RULE}"
    else:
        os.mkfifo(lock)
        expected = f"{lock} is a FIFO: only regular files are read"
    before = snapshot(outside)
    row = records.read_manifest(workdir).iloc[0].to_dict()
    with pytest.raises(errors.ContractError) as raised:
        records.add_manifest_rows(workdir, [row])
    assert one_line(raised) == expected
    assert snapshot(outside) == before and not os.path.exists(target)


def test_a_lock_outside_any_workdir_is_not_opened_through_a_link(tmp_path):
    target = tmp_path / "created"
    os.symlink(target, tmp_path / "x.lock")
    with pytest.raises(errors.ContractError) as raised:
        with records.locked(str(tmp_path / "x.lock")):
            pass
    assert one_line(raised) == (f"{tmp_path}/x.lock is a symbolic link: lock files are "
                                "never opened through a link")
    assert not target.exists()


# ---------------------------------------------------------- checkpoint state


def _ckpt(tmp_path, state):
    ckpt = tmp_path / "w" / "checkpoints" / "dense" / "sparsity_0" / "seed_0" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "ckpt-1.index").write_bytes(b"i")
    (ckpt / "ckpt-1.data-00000-of-00001").write_bytes(b"d")
    (ckpt / "checkpoint").write_text(state)
    return str(ckpt)


@pytest.mark.parametrize("state, why", [
    ('model_checkpoint_path: "{P}/outside/ckpt-1"\n',
     "model_checkpoint_path '{P}/outside/ckpt-1' is not the name of a file in {C}: only "
     "relative names inside it"),
    ('model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
     'all_model_checkpoint_paths: "../../../../../../outside/ckpt-0"\n',
     "all_model_checkpoint_paths '../../../../../../outside/ckpt-0' is not the name of a "
     "file in {C}: only relative names inside it"),
    ('model_checkpoint_path: "ckpt-7"\n',
     "model_checkpoint_path 'ckpt-7' names a checkpoint whose files are missing"),
    ('model_checkpoint_path: "ckpt-1"\nsave_path: "x"\n',
     "line 2 is not a field TensorFlow writes"),
])
def test_a_checkpoint_state_naming_files_outside_its_folder_is_refused(tmp_path, state, why):
    ckpt = _ckpt(tmp_path, state.format(P=tmp_path))
    with pytest.raises(errors.ContractError) as raised:
        records.check_checkpoint_state(ckpt)
    assert one_line(raised) == (
        f"{ckpt}/checkpoint is not a checkpoint state this toolkit restores "
        f"({why.format(P=tmp_path, C=ckpt)}); remove {ckpt} to train the member again from "
        "its start")


def test_a_linked_checkpoint_file_is_refused(tmp_path):
    ckpt = _ckpt(tmp_path, 'model_checkpoint_path: "ckpt-1"\n')
    os.remove(os.path.join(ckpt, "ckpt-1.index"))
    os.symlink(tmp_path / "elsewhere.index", os.path.join(ckpt, "ckpt-1.index"))
    with pytest.raises(errors.ContractError, match="ckpt-1.index is a link or not a regular"):
        checkpoint_state.check(ckpt)


def test_train_refuses_an_outside_checkpoint_before_restoring_or_deleting(tmp_path):
    """The one training subprocess: a member's ckpt/checkpoint naming a checkpoint
    outside the workdir stops `train` in one line; the outside files stay."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001"):
        (outside / name).write_bytes(b"outside weights")
    ckpt = _ckpt(tmp_path, f'model_checkpoint_path: "{outside}/ckpt-1"\n'
                           f'all_model_checkpoint_paths: "{outside}/ckpt-1"\n')
    before = snapshot(str(outside))
    workdir = str(tmp_path / "w")
    result = run_stage("save_checkpoint.train", f"--workdir={workdir}", "--dataset=digits",
                       "--model=small_cnn", "--width=4", "--sparsities=0", "--seeds=1",
                       "--epochs=1", check=False, timeout=300)
    assert result.returncode == 2, result.stderr
    assert refusal(result)[0].startswith(
        f"error: {ckpt}/checkpoint is not a checkpoint state this toolkit restores "
        f"(model_checkpoint_path '{outside}/ckpt-1' is not the name of a file in {ckpt}")
    assert snapshot(str(outside)) == before


# ------------------------------------------------------------ journal, caches


def test_a_journal_never_puts_a_link_back(tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (tmp_path / "outside.json").write_text('["outside"]')
    folder = workdir / f"{journal.PREFIX}otherhost@1"
    folder.mkdir()
    os.symlink(tmp_path / "outside.json", folder / "1")
    (folder / journal.JOURNAL).write_text(
        json.dumps({"journal": journal.FORMAT}) + "\n"
        + json.dumps({"op": "replaced", "path": "classes.json", "backup": "1"}) + "\n")
    os.utime(folder, (0, 0))  # another host's, a day old: rolled back at the next start
    with pytest.raises(errors.ContractError) as raised:
        journal.recover(str(workdir))
    assert one_line(raised) == (
        f"{folder}/journal is a broken --force journal (line 2's backup is a link or not a "
        "regular file: a journal never puts a link back); check the files it lists, then "
        f"remove {folder}")
    assert not os.path.lexists(workdir / "classes.json")


def test_a_tfrecord_folder_outside_gets_no_size_cache(setup, monkeypatch):
    """A dataset.json naming `tfrecord:<outside folder>`: the size cache goes to W."""
    import imagenet_layout
    from pie.data import size_cache, sources
    workdir, outside = setup
    data = os.path.join(outside, "data")
    imagenet_layout.write_imagenet_layout(data, num_classes=3, train_per_shard=2, validation=3)
    monkeypatch.setenv("PIE_CACHE_DIR", os.path.join(workdir, "never"))
    config = records.read_dataset_config(workdir)
    records.write_json(Workdir(workdir).dataset_config,
                       dict(config, dataset="tfrecord:" + data, num_classes=3,
                            class_names=list(imagenet_layout.TEXTS[:3]), family="imagenet"))
    records.write_json(Workdir(workdir).classes, list(imagenet_layout.TEXTS[:3]))
    before = snapshot(outside)
    source = sources.load_for_workdir(workdir)
    assert source.eval_size == 3
    assert snapshot(outside) == before
    assert not os.path.exists(os.path.join(data, size_cache.CACHE_NAME))
    cache = json.load(open(os.path.join(workdir, size_cache.WORKDIR_CACHE_NAME)))
    assert data in cache["folders"]


# --------------------------------------------------------------- bounded reads


@pytest.mark.parametrize("relative", ["classes.json", "dataset.json",
                                      "per_class/.gen_tstatistic.stamp.json"])
def test_deeply_nested_json_is_one_line(setup, relative):
    workdir, _ = setup
    path = os.path.join(workdir, relative)
    with open(path, "w") as handle:
        handle.write("[" * 100_000 + "]" * 100_000)
    call = {"classes.json": lambda: gen_tstatistic.run(workdir, force=True),
            "dataset.json": lambda: records.read_dataset_config(workdir),
            "per_class/.gen_tstatistic.stamp.json":
                lambda: records.check_written(Workdir(workdir).file("tstatistic"))}[relative]
    with pytest.raises(errors.ContractError) as raised:
        call()
    assert one_line(raised) == f"{path} nests lists or objects 100000 deep: at most 64 are read"


def test_json_depth_counts_brackets_outside_strings_only():
    text = json.dumps({"a": ["[[[{{", {"b": [1, "\\\"]]"]}], "c": "}"})
    assert bounded_json.depth(text) == 4
    assert bounded_json.depth("[]" * 1000) == 1
    with pytest.raises(errors.ContractError, match="is 17 bytes: JSON files of a workdir "
                                                   "are read up to 16"):
        bounded_json.loads('"' + "x" * 15 + '"', "f.json", max_bytes=16)


def test_a_deeply_nested_journal_is_one_line(tmp_path):
    workdir = tmp_path / "w"
    folder = workdir / f"{journal.PREFIX}otherhost@1"
    folder.mkdir(parents=True)
    (folder / journal.JOURNAL).write_text(
        json.dumps({"journal": journal.FORMAT}) + "\n" + "[" * 50_000 + "]" * 50_000 + "\n")
    os.utime(folder, (0, 0))
    with pytest.raises(errors.ContractError) as raised:
        journal.recover(str(workdir))
    assert "line 2 is not JSON" in one_line(raised)


def test_too_many_class_names_are_refused_before_any_per_class_array(setup):
    workdir, _ = setup
    records.write_json(Workdir(workdir).classes, [f"c{k}" for k in range(100_000)])
    with pytest.raises(errors.ContractError) as raised:
        gen_tstatistic.run(workdir, force=True)
    assert one_line(raised) == (
        f"{workdir}/classes.json lists 100000 class names: at most 1000 are read (labels "
        "and predictions name classes 0..9)")
    assert records.class_limit(None) == records.MAX_CLASSES
    assert records.class_limit(999) == 2000  # twice the classes the data names


def _bomb(path, rows, top5=None):
    """A Parquet file with the prediction columns, `rows` equal rows: tiny on disk."""
    columns = {"member_id": pa.array(["dense_0_seed0"] * rows).dictionary_encode(),
               "image_id": pa.array(np.zeros(rows, np.int64)),
               "label": pa.array(np.zeros(rows, np.int32)),
               "predicted": pa.array(np.zeros(rows, np.int32)),
               "prob_predicted": pa.array(np.ones(rows, np.float32)),
               "prob_label": pa.array(np.ones(rows, np.float32))}
    if top5 is not None:
        columns["top5"] = pa.array([top5] * rows).dictionary_encode()
    pq.write_table(pa.table(columns), path, compression="zstd")


def test_a_parquet_bomb_is_refused_from_its_metadata(tmp_path, monkeypatch):
    """Refused from the footer: the read itself is never reached."""
    path = str(tmp_path / "bomb.parquet")
    _bomb(path, 3_000_000)
    assert os.path.getsize(path) < 200_000  # unpacks to about 80 MB
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(errors.ContractError) as raised:
        records.read_prediction_file(path)
    assert one_line(raised) == (f"{path} holds 3000000 rows: a predictions file holds one "
                                f"per image, at most {records.MAX_PREDICTION_ROWS}")


def test_a_long_text_repeated_on_every_row_is_refused_before_decoding(tmp_path):
    path = str(tmp_path / "text.parquet")
    _bomb(path, 1000, top5="9 " * 50_000)  # 100 kB held once, 100 MB decoded
    with pytest.raises(errors.ContractError) as raised:
        records.read_prediction_file(path, optional=["top5"])
    assert one_line(raised) == (f"{path}: column top5 holds a value of 100000 bytes (at "
                                f"most {records.MAX_TEXT_BYTES_PER_ROW}): not a predictions "
                                "file this toolkit reads")


# ------------------------------------------------------------- PIE datasets


def _pie_files(workdir):
    """{relative path: bytes} of W/pie/tfrecords, the size caches' file stamps left out
    (they hold the files' modification times)."""
    root = os.path.join(workdir, "pie", "tfrecords")
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                content = handle.read()
            if name == "pie_sizes.json":
                files = json.loads(content)["files"]
                content = {k: {f: v for f, v in entry.items() if f != "stamp"}
                           for k, entry in files.items()}
            found[os.path.relpath(path, root)] = content
    return found


def test_two_pie_tfrecords_runs_at_once_leave_the_output_of_one(tiny_predictions, tmp_path):
    from pie_dataset_gen import generate_pie_dataset
    together, alone = str(tmp_path / "together"), str(tmp_path / "alone")
    for workdir in (together, alone):
        shutil.copytree(tiny_predictions, workdir, symlinks=True)
    # A stale staging folder of a killed run: removed under the lock.
    stale = os.path.join(together, "pie", "tfrecords", "dense_0.partial")
    os.makedirs(os.path.join(stale, "pie"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "pie_dataset_gen.generate_pie_dataset",
               f"--workdir={together}", "--force", "--shard_size=64"]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    generate_pie_dataset.run(workdir=alone, force=True, shard_size=64)
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert not os.path.exists(stale)
    assert not [name for name in os.listdir(os.path.join(together, "pie", "tfrecords"))
                if name.endswith(".partial")]
    written = _pie_files(alone)
    assert any(name.endswith(".tfrecord") for name in written)
    assert _pie_files(together) == written


def test_records_are_serialised_in_a_fixed_feature_order():
    from pie_dataset_gen import generate_pie_dataset
    row = {"image_id": 3, "label": 1, "method": "dense", "sparsity": 0.5, "is_pie": True,
           "baseline_agreement": 0.75}
    reordered = dict(reversed(list(row.items())))
    first = generate_pie_dataset.example(b"\x89PNG....", row, "one")
    assert generate_pie_dataset.example(b"\x89PNG....", reordered, "one") == first
    # The feature names follow each other sorted in the bytes.
    names = [name for name in ("baseline_agreement", "image/class/label", "image/class/text",
                               "image/encoded", "image/format", "image_id", "is_pie",
                               "method", "sparsity")]
    positions = [first.index(name.encode()) for name in names]
    assert positions == sorted(positions)


def test_a_linked_tfrecords_folder_is_refused_before_anything_is_deleted(setup):
    """The attack of issue 23: `pie-tfrecords --force` with W/pie/tfrecords linked out
    deleted outside folders and wrote records there."""
    workdir, outside = setup
    os.makedirs(os.path.join(outside, "dense_0", "pie"))
    (open(os.path.join(outside, "dense_0", "pie", "keep.tfrecord"), "wb")).close()
    os.symlink(outside, os.path.join(workdir, "pie", "tfrecords"))
    before = snapshot(outside)
    from pie_dataset_gen import generate_pie_dataset
    with pytest.raises(errors.ContractError) as raised:
        generate_pie_dataset.run(workdir=workdir, force=True)
    assert one_line(raised) == f"{workdir}/pie/tfrecords is a symbolic link: {RULE}"
    assert snapshot(outside) == before


# --------------------------------------------------------- spreadsheet-safe tables


def test_class_names_like_formulas_are_guarded_in_tables_and_read_back(setup):
    """Names that a spreadsheet would evaluate are written behind a quote by the
    per-class stages, and every reader (metrics -> t-test -> records.read_csv) gets
    the names as they are in classes.json."""
    from per_class_accuracy import aggregate_ckpt_metrics
    workdir, _ = setup
    names = ['=HYPERLINK("http://x","y")', "-neg", "@x", "+1"] + [f"c{k}" for k in range(6)]
    records.write_json(Workdir(workdir).classes, names)
    aggregate_ckpt_metrics.run(workdir, force=True)
    gen_tstatistic.run(workdir, force=True)
    for key in ("per_class_metrics", "tstatistic"):
        path = Workdir(workdir).file(key)
        with open(path) as handle:
            text = handle.read()
        assert '"\'=HYPERLINK(""http://x"",""y"")"' in text and ",'-neg," in text
        assert ",'@x," in text and ",'+1," in text and ",-neg," not in text
        table = records.read_csv(path, ["class_name"])
        assert sorted(set(table["class_name"])) == sorted(names)
    tstatistic = records.read_csv(Workdir(workdir).file("tstatistic"), ["class_id"])
    assert pd.api.types.is_numeric_dtype(tstatistic["class_id"])
