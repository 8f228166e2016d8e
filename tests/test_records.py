import os

import numpy as np
import pandas as pd
import pytest

from pie.io import records
from pie.io.workdir import Workdir


def _row(member_id, method="dense", sparsity=0.0, seed=0):
    return {"member_id": member_id, "method": method, "sparsity": sparsity,
            "measured_sparsity": sparsity, "seed": seed, "dataset": "digits",
            "model": "small_cnn", "top1": 0.9, "path": f"m/{member_id}",
            "model_file": f"m/{member_id}/model.keras"}


def test_atomic_path_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    records.write_text(str(target), "old")
    with pytest.raises(RuntimeError):
        with records.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_manifest_rows_merge_by_member_id(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("dense_0_seed1", seed=1), _row("dense_0_seed0")])
    records.add_manifest_rows(workdir, [dict(_row("dense_0_seed0"), top1=0.5)])
    manifest = records.read_manifest(workdir)
    assert list(manifest.columns) == records.MANIFEST_COLUMNS
    assert list(manifest["member_id"]) == ["dense_0_seed0", "dense_0_seed1"]
    assert manifest.loc[0, "top1"] == 0.5


def test_manifest_rows_missing_column(tmp_path):
    row = _row("a")
    del row["seed"]
    with pytest.raises(records.ContractError, match=r"manifest rows lack columns \['seed'\]"):
        records.add_manifest_rows(str(tmp_path), [row])


def test_missing_manifest_message(tmp_path):
    with pytest.raises(records.ContractError,
                       match="no population manifest at .*: run save_checkpoint.train first"):
        records.read_manifest(str(tmp_path))


def _write_predictions(workdir, member_id, image_ids):
    frame = pd.DataFrame({"member_id": member_id, "image_id": image_ids, "label": 0,
                          "predicted": 0, "prob_predicted": 1.0, "prob_label": 1.0})
    records.write_predictions(Workdir(workdir).predictions_path(member_id), frame)


def test_read_predictions_joins_manifest(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a"), _row("b", "magnitude", 0.5)])
    _write_predictions(workdir, "a", [0, 1, 2])
    _write_predictions(workdir, "b", [2, 1, 0])
    frame = records.read_predictions(workdir, records.read_manifest(workdir))
    assert list(frame.columns) == ["member"] + list(records.PREDICTION_DTYPES)
    assert frame["member"].tolist() == [0, 0, 0, 1, 1, 1]  # rows of the sorted manifest
    assert frame.loc[frame.member == 1, "image_id"].tolist() == [2, 1, 0]
    assert frame["label"].dtype == "int32" and frame["prob_label"].dtype == "float32"


def test_predictions_are_stored_in_the_readers_types(tmp_path):
    import pyarrow.parquet as pq
    path = Workdir(str(tmp_path)).predictions_path("a")
    _write_predictions(str(tmp_path), "a", [0, 1, 2])  # int64 and float64 columns
    schema = pq.read_schema(path)
    assert {name: str(schema.field(name).type) for name in records.PREDICTION_DTYPES} == {
        "image_id": "int64", "label": "int32", "predicted": "int32",
        "prob_predicted": "float", "prob_label": "float"}
    frame = pd.DataFrame({"member_id": "a", "image_id": [0], "label": [2**31],
                          "predicted": [0], "prob_predicted": [1.0], "prob_label": [1.0]})
    with pytest.raises(records.ContractError,
                       match=r"cannot write .*a\.parquet: a column has the wrong type: "
                             r"Integer value 2147483648 not in range"):
        records.write_predictions(path, frame)


def test_read_predictions_rejects_different_image_sets(tmp_path):
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a"), _row("b", seed=1)])
    _write_predictions(workdir, "a", [0, 1, 2])
    _write_predictions(workdir, "b", [0, 1, 3])
    with pytest.raises(records.ContractError,
                       match="members a and b have predictions on different image sets"):
        records.read_predictions(workdir, records.read_manifest(workdir))


def _contract_frame(n=50, seed=0):
    """A predictions frame with every column of the contract, optional ones too."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, 1000, (n, 5))
    return pd.DataFrame({
        "member_id": "magnitude_0.5_seed3", "image_id": np.arange(n, dtype=np.int64) * 7,
        "label": rng.integers(0, 1000, n), "predicted": top[:, 0],
        "prob_predicted": rng.random(n).astype(np.float32),
        "prob_label": rng.random(n).astype(np.float32),
        "top5": [" ".join(map(str, row)) for row in top], "distribution": "fog/3"})


def test_parquet_and_old_csv_files_hold_the_same_predictions(tmp_path):
    frame = _contract_frame()
    wd = Workdir(str(tmp_path))
    parquet = wd.predictions_path("m", "fog/3")
    legacy = wd.legacy_predictions_path("m", "fog/3")
    assert parquet.endswith(".parquet") and legacy.endswith(".csv.gz")
    records.write_predictions(parquet, frame.sample(frac=1, axis=1, random_state=0))
    records.write_csv(legacy, frame)
    # The Parquet file holds the contract's columns in order, values exact.
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), frame, check_dtype=False)
    optional = records.OPTIONAL_PREDICTION_COLUMNS
    new = records.read_prediction_file(parquet, optional=optional)
    old = records.read_prediction_file(legacy, optional=optional)
    pd.testing.assert_frame_equal(new, old, check_dtype=False)
    assert new["label"].dtype == old["label"].dtype == np.int32
    assert new["prob_label"].dtype == old["prob_label"].dtype == np.float32
    # Only the columns asked for are read.
    assert list(records.read_prediction_file(parquet, ["label"]).columns) == ["label"]


def test_parquet_predictions_win_over_and_replace_old_csv(tmp_path):
    wd = Workdir(str(tmp_path))
    frame = _contract_frame().drop(columns=["top5", "distribution"])
    assert wd.existing_predictions_path("m") == wd.predictions_path("m")  # none yet
    records.write_csv(wd.legacy_predictions_path("m"), frame)
    assert wd.existing_predictions_path("m") == wd.legacy_predictions_path("m")
    records.write_predictions(wd.predictions_path("m"), frame)
    assert wd.existing_predictions_path("m") == wd.predictions_path("m")
    assert not os.path.exists(wd.legacy_predictions_path("m"))


def test_read_predictions_of_an_old_workdir_equals_parquet(tmp_path):
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    for workdir in (new, old):
        records.add_manifest_rows(workdir, [_row("a"), _row("b", "magnitude", 0.5)])
    for seed, member_id in enumerate(("a", "b")):
        frame = _contract_frame(seed=seed).assign(member_id=member_id)
        records.write_predictions(Workdir(new).predictions_path(member_id), frame)
        records.write_csv(Workdir(old).legacy_predictions_path(member_id), frame)
    pd.testing.assert_frame_equal(
        records.read_predictions(old, records.read_manifest(old)),
        records.read_predictions(new, records.read_manifest(new)))


def test_broken_prediction_files_are_contract_errors(tmp_path):
    wd = Workdir(str(tmp_path))
    path = wd.predictions_path("m")
    records.write_predictions(path, _contract_frame())
    with pytest.raises(records.ContractError, match=r"m.parquet lacks columns \['group'\]"):
        records.read_prediction_file(path, ["label", "group"])
    with open(path, "rb") as f:
        head = f.read(100)
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(records.ContractError, match=(
            r"m.parquet changed after its stage wrote it \(50 rows, [0-9]+ bytes; now 100 "
            r"bytes\): truncated or edited\? rerun the stage that writes it$")):
        records.read_prediction_file(path)
    records.forget_written(path)  # no record: parsed
    with pytest.raises(records.ContractError, match="m.parquet is not a readable Parquet file"):
        records.read_prediction_file(path)
    with pytest.raises(records.ContractError, match="missing input file"):
        records.read_prediction_file(wd.predictions_path("other"))
    with pytest.raises(records.ContractError, match=r"missing columns \['prob_label'\]"):
        records.write_predictions(path, _contract_frame().drop(columns="prob_label"))


def test_distribution_paths():
    assert Workdir("W").folder("pie") == os.path.join("W", "pie")
    assert Workdir("W").folder("pie", "fog/2") == os.path.join("W", "pie", "fog-2")


def test_written_files_get_usual_permissions(tmp_path):
    path = tmp_path / "out.csv"
    records.write_text(str(path), "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask


def test_broken_input_files_are_contract_errors(tmp_path):
    empty = tmp_path / "population.csv"
    empty.write_text("")
    with pytest.raises(records.ContractError, match="population.csv is not a readable CSV"):
        records.read_manifest(str(tmp_path))
    truncated = tmp_path / "p.csv.gz"
    records.write_csv(str(truncated), pd.DataFrame({"a": range(1000)}))
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(records.ContractError, match=r"p.csv.gz changed after its stage wrote "
                       r"it \(1000 rows, [0-9]+ bytes; now 40 bytes\)"):
        records.read_csv(str(truncated))
    records.forget_written(str(truncated))
    with pytest.raises(records.ContractError, match="p.csv.gz is not a readable CSV"):
        records.read_csv(str(truncated))
    (tmp_path / "x.json").write_text("[")
    with pytest.raises(records.ContractError, match="x.json is not readable JSON"):
        records.read_json(str(tmp_path / "x.json"))
    with pytest.raises(records.ContractError, match="p.csv.gz lacks columns"):
        records.write_csv(str(truncated), pd.DataFrame({"a": [1]}))
        records.read_csv(str(truncated), ["b"])


def test_members_disagreeing_on_labels_fail_every_analysis(tmp_path):
    from pie.analysis import stage_io
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a"), _row("b", seed=1)])
    _write_predictions(workdir, "a", [0, 1, 2])
    frame = pd.read_parquet(Workdir(workdir).predictions_path("a")).assign(member_id="b")
    frame.loc[1, "label"] = 1
    records.write_predictions(Workdir(workdir).predictions_path("b"), frame)
    with pytest.raises(records.ContractError, match="members disagree on the label of image 1"):
        stage_io.read_compact_predictions(workdir, records.read_manifest(workdir))


def _manifest_file(tmp_path, rows):
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    pd.DataFrame(rows)[records.MANIFEST_COLUMNS].to_csv(Workdir(workdir).manifest, index=False)
    return workdir


@pytest.mark.parametrize("change, message", [
    ({"member_id": "../x"}, "member_id '../x' is not allowed: use letters, digits and '._-', "
                            "starting with a letter or digit"),
    ({"method": "../../x"}, "method '../../x' is not allowed"),
    ({"method": ".."}, "method '..' is not allowed"),
    ({"model": "a b"}, "model 'a b' is not allowed"),
    ({"model_file": "/etc/passwd.keras"}, "model_file '/etc/passwd.keras' must be a path "
                                          "relative to the workdir"),
    ({"model_file": "m/../../x/model.keras"}, "model_file 'm/../../x/model.keras' must not "
                                              "hold '..', '.' or empty parts"),
    ({"path": "../m"}, "path '../m' must not hold '..', '.' or empty parts"),
    ({"model_file": "m/a/model.h5"}, "model_file 'm/a/model.h5' must end in .keras or .tflite"),
    ({"sparsity": "half"}, "sparsity 'half' is not a number in [0, 1)"),
    ({"sparsity": 1.0}, "sparsity 1.0 is not a number in [0, 1)"),
    ({"sparsity": -0.5}, "sparsity -0.5 is not a number in [0, 1)"),
    ({"seed": 1.5}, "seed 1.5 is not an integer in [0, 2147483647]"),
    ({"top1": 7}, "top1 7 is not a number in [0, 1]"),
    ({"model_file": None}, "model_file is empty (a truncated or hand-broken manifest?)"),
])
def test_manifest_rows_are_validated(tmp_path, change, message):
    workdir = _manifest_file(tmp_path, [dict(_row("a"), **change)])
    path = Workdir(workdir).manifest
    member = change.get("member_id", "a")
    with pytest.raises(records.ContractError) as error:
        records.read_manifest(workdir)
    assert str(error.value).startswith(f"{path} row 1 (member_id {member!r}): {message}")


def test_manifest_model_file_through_a_link_out_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    workdir = _manifest_file(tmp_path, [_row("a")])
    os.symlink(outside, os.path.join(workdir, "m"))
    with pytest.raises(records.ContractError) as error:
        records.read_manifest(workdir)
    assert str(error.value) == (f"{Workdir(workdir).manifest} row 1 (member_id 'a'): path 'm/a' "
                                "leads outside the workdir through a symbolic link")


def test_manifest_duplicates_are_refused(tmp_path):
    workdir = _manifest_file(tmp_path, [_row("a"), _row("a", seed=1)])
    with pytest.raises(records.ContractError, match=r"row 2 \(member_id 'a'\): member_id "
                       "listed twice: every member is one row$"):
        records.read_manifest(workdir)
    workdir = _manifest_file(tmp_path / "2", [
        _row("m1", "magnitude", 0.5), _row("m2", "magnitude", 0.5000001)])
    with pytest.raises(records.ContractError, match=r"row 2 \(member_id 'm2'\): the same member "
                       r"\(method magnitude, sparsity 0.5, seed 0\) as 'm1'$"):
        records.read_manifest(workdir)


def test_manifest_sparsity_is_read_at_key_precision(tmp_path):
    workdir = _manifest_file(tmp_path, [_row("a", sparsity=-0.0), _row("b", "magnitude", 0.90000001)])
    manifest = records.read_manifest(workdir)
    assert [str(value) for value in manifest["sparsity"]] == ["0.0", "0.9"]
    assert [records.variant_key(row.method, row.sparsity)
            for row in manifest.itertuples()] == ["dense_0", "magnitude_0.9"]


def test_atomic_writes_fsync_the_file_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(
        f"/proc/self/fd/{fd}")) or real_fsync(fd))
    records.write_text(str(tmp_path / "out.txt"), "new")
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(".tmp-")
    assert synced[1] == str(tmp_path)


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    import socket
    import subprocess
    import sys
    import time
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    (tmp_path / "sub").mkdir()
    names = {"killed": f"sub/.tmp-{host}@{dead}-abcpie.csv",
             "live": f".tmp-{host}@{os.getpid()}-abcpie.csv",
             "old": ".tmp-xyz-old.csv", "recent": ".tmp-xyz-new.csv", "kept": "pie.csv"}
    for name in names.values():
        (tmp_path / name).write_text("x")
    day_ago = time.time() - records.STALE_AFTER_S - 10
    os.utime(tmp_path / names["old"], (day_ago, day_ago))
    removed = records.remove_stale_temporaries(str(tmp_path))
    assert removed == sorted([str(tmp_path / names["killed"]), str(tmp_path / names["old"])])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        os.path.basename(names[key]) for key in ("live", "recent", "kept"))


def test_manifest_edited_after_a_recorded_write_is_read(tmp_path):
    """The manifest is a file users edit: a write record beside it is not checked."""
    workdir = str(tmp_path)
    records.add_manifest_rows(workdir, [_row("a", seed=0), _row("b", seed=1)])
    manifest = records.read_manifest(workdir)
    records.write_csv(Workdir(workdir).manifest, manifest.iloc[:1], records.MANIFEST_COLUMNS)
    records.add_manifest_rows(workdir, [_row("c", seed=2)])
    assert list(records.read_manifest(workdir)["member_id"]) == ["a", "c"]


# ------------------------------------------------------------ records in the stamps


def test_a_table_is_recorded_in_its_writers_stamp(tmp_path):
    """The record (rows, bytes, SHA-256) is in the stamp of the stage FILES names."""
    import hashlib
    import json
    wd = Workdir(str(tmp_path))
    path = wd.file("pie")
    records.write_csv(path, pd.DataFrame({"a": range(7)}))
    stamp = os.path.join(os.path.dirname(path), ".aggregate_predictions.stamp.json")
    with open(stamp) as handle:
        content = json.load(handle)
    with open(path, "rb") as handle:
        data = handle.read()
    assert content["stage"] == "pie_dataset_gen.aggregate_predictions"
    record = content["outputs"]["pie.csv"]
    assert (record["rows"], record["bytes"], record["sha256"]) == (
        7, len(data), hashlib.sha256(data).hexdigest())
    assert not os.path.exists(os.path.join(os.path.dirname(path), records.LEGACY_WRITTEN))
    # Written again by another stage: the record moves to that stage's stamp.
    with records.writing_as("pie.stages.other"):
        records.write_csv(path, pd.DataFrame({"a": range(3)}))
    with open(stamp) as handle:
        assert "pie.csv" not in json.load(handle)["outputs"]
    assert records.written_record(path)[0] == "pie.stages.other"
    assert records.written_record(path)[1]["rows"] == 3


def test_a_stamp_naming_another_digest_is_reported_with_the_stage_to_rerun(tmp_path):
    import json
    path = Workdir(str(tmp_path)).file("tstatistic_summary")
    records.write_csv(path, pd.DataFrame({"a": range(5)}))
    records.read_csv(path)  # as recorded: read
    stamp = os.path.join(os.path.dirname(path), ".gen_tstatistic.stamp.json")
    with open(stamp) as handle:
        content = json.load(handle)
    # Another file of the same size: another digest and modification time (a file
    # with the recorded size and time is taken as written, without hashing it).
    content["outputs"]["tstatistic_summary.csv"]["sha256"] = "0" * 64
    content["outputs"]["tstatistic_summary.csv"]["mtime_ns"] -= 10**9
    with open(stamp, "w") as handle:
        json.dump(content, handle)
    size = os.path.getsize(path)
    with pytest.raises(records.ContractError) as caught:
        records.read_csv(path)
    assert str(caught.value) == (
        f"{path} changed after per_class_accuracy.gen_tstatistic wrote it (5 rows, {size} "
        "bytes; now another SHA-256, same size): truncated or edited? rerun "
        "per_class_accuracy.gen_tstatistic")


def test_an_older_workdirs_written_json_is_still_read(tmp_path):
    """Records of older versions (`.written.json` beside the table) still catch a cut."""
    import json
    path = tmp_path / "robustness" / "accuracy.csv"
    path.parent.mkdir()
    path.write_text("a\n1\n2\n")
    (path.parent / records.LEGACY_WRITTEN).write_text(json.dumps({"accuracy.csv": {
        "rows": 2, "bytes": 99, "sha256": "0" * 64, "writer": "robustness_tests.analyze"}}))
    with pytest.raises(records.ContractError, match=(
            r"accuracy.csv changed after robustness_tests.analyze wrote it \(2 rows, 99 bytes; "
            r"now 6 bytes\): truncated or edited\? rerun robustness_tests.analyze$")):
        records.read_csv(str(path))
    records.forget_written(str(path))
    assert records.read_csv(str(path))["a"].tolist() == [1, 2]


def test_a_stage_killed_between_two_outputs_is_not_up_to_date(tmp_path):
    """Recording an output drops the stamp's inputs until the stage's write_stamp."""
    from pie.analysis import stage_io
    workdir = str(tmp_path)
    first, second = tmp_path / "out" / "a.csv", tmp_path / "out" / "b.csv"
    stamp = os.path.join(str(first.parent), ".stage.stamp.json")
    with records.writing_as("pie.stage"):
        records.write_csv(str(first), pd.DataFrame({"a": [1]}))
        records.write_csv(str(second), pd.DataFrame({"a": [1]}))
        stage_io.write_stamp(workdir, stamp, [], [str(first), str(second)], {})
        assert stage_io.is_up_to_date(workdir, stamp, [], [str(first), str(second)], {})
        records.write_csv(str(first), pd.DataFrame({"a": [2]}))  # killed after this
    assert not stage_io.is_up_to_date(workdir, stamp, [], [str(first), str(second)], {})


def test_stamp_cache_ends_with_the_last_of_overlapping_blocks():
    first, second = records.stamps_read_once(), records.stamps_read_once()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert records._STAMPS_READ is not None  # the second block still reads
    second.__exit__(None, None, None)
    assert records._STAMPS_READ is None
