import os
import shutil

import numpy as np
import pandas as pd

from conftest import error_lines, run_stage
from pie.data import sources
from pie.io import records
from pie.models import predict
from pie.io.workdir import Workdir


def test_predictions_files_follow_the_contract(tiny_predictions):
    manifest = records.read_manifest(tiny_predictions)
    _, labels, ids = sources.load("digits").eval_arrays()
    for row in manifest.to_dict("records"):
        frame = pd.read_parquet(Workdir(tiny_predictions).predictions_path(row["member_id"]))
        assert list(frame.columns) == records.PREDICTION_COLUMNS + ["top5"]
        assert np.array_equal(frame["image_id"], ids) and np.array_equal(frame["label"], labels)
        # The training stage measured top-1 on its own; the two must agree.
        assert abs((frame["predicted"] == frame["label"]).mean() - row["top1"]) < 1e-6
        assert (frame["top5"].str.split().str[0].astype(int) == frame["predicted"]).all()
        correct = frame["predicted"] == frame["label"]
        assert np.allclose(frame.loc[correct, "prob_predicted"], frame.loc[correct, "prob_label"])


def test_rerun_skips_members_done(tiny_predictions):
    path = Workdir(tiny_predictions).predictions_path("dense_0_seed0")
    before = os.stat(path).st_mtime_ns
    result = run_stage("pie_dataset_gen.predictions", f"--workdir={tiny_predictions}")
    assert "4 members, 4 done, 0 to run" in result.stdout
    assert os.stat(path).st_mtime_ns == before


def test_missing_model_file_exits_2_before_writing(tiny_population, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_population, workdir)
    manifest = records.read_manifest(workdir)
    os.remove(os.path.join(workdir, manifest.loc[1, "model_file"]))
    # Training wrote each member's clean predictions; the failed run changes none.
    folder = os.path.join(workdir, "predictions")
    before = {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
              for root, _, names in os.walk(folder) for name in names}
    os.remove(Workdir(workdir).predictions_path(manifest.loc[1, "member_id"]))
    del before[Workdir(workdir).predictions_path(manifest.loc[1, "member_id"])]
    result = run_stage("pie_dataset_gen.predictions", f"--workdir={workdir}", check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: manifest member dense_0_seed1: model file missing at "
        f"{os.path.join(workdir, manifest.loc[1, 'model_file'])}"]
    assert {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names} == before


def test_predictions_frame_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    frame = predict.predictions_frame("m", logits, labels=[1, 2], image_ids=[5, 9])
    assert frame["predicted"].tolist() == [0, 2]
    np.testing.assert_allclose(frame["prob_predicted"], [0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(frame["prob_label"], [0.2, 0.6], rtol=1e-6)
    assert "top5" not in frame  # only with more than 5 classes
    subset = predict.predictions_frame("m", logits, labels=[1, 2], image_ids=[5, 9],
                                       class_subset=[1, 2])
    assert subset["predicted"].tolist() == [1, 2]
    np.testing.assert_allclose(subset["prob_predicted"], [2 / 3, 2 / 3], rtol=1e-6)


def test_label_out_of_range_is_an_error():
    import pytest
    with pytest.raises(records.ContractError, match=r"labels outside the model's 3 classes \(0..2\)"):
        predict.predictions_frame("m", np.zeros((1, 3)), labels=[3], image_ids=[0])


def test_pie_tfrecords_round_trip(tiny_predictions):
    run_stage("pie_dataset_gen.generate_pie_dataset", f"--workdir={tiny_predictions}",
              "--shard_size=50")
    table = pd.read_csv(os.path.join(tiny_predictions, "pie", "pie.csv"))
    images, labels, _ = sources.load("digits").eval_arrays()
    root = os.path.join(tiny_predictions, "pie", "tfrecords", "magnitude_0.5")
    counts = records.read_json(os.path.join(root, "counts.json"))
    for subset, flag in (("pie", True), ("non_pie", False)):
        expected = table[table["is_pie"].astype(bool) == flag]
        assert counts[f"n_{subset}"] == len(expected)
        if expected.empty:
            continue
        source = sources.load("tfrecord:" + os.path.join(root, subset))
        back, back_labels, back_ids = source.eval_arrays()
        assert np.array_equal(back_ids, expected["image_id"].to_numpy())
        assert np.array_equal(back, images[back_ids])
        assert np.array_equal(back_labels, labels[back_ids])
        assert source.num_classes == 10
    assert counts["n_pie"] + counts["n_non_pie"] == len(images)


def test_pie_tfrecords_rewritten_only_when_pie_table_changes(tiny_predictions, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_predictions, workdir)
    run_stage("pie_dataset_gen.generate_pie_dataset", f"--workdir={workdir}")
    again = run_stage("pie_dataset_gen.generate_pie_dataset", f"--workdir={workdir}")
    assert "1 variants, 1 done, 0 to write" in again.stdout
    path = os.path.join(workdir, "pie", "pie.csv")
    table = pd.read_csv(path)
    table.loc[0, "is_pie"] = not table.loc[0, "is_pie"]
    records.write_csv(path, table)
    changed = run_stage("pie_dataset_gen.generate_pie_dataset", f"--workdir={workdir}")
    assert "1 variants, 0 done, 1 to write" in changed.stdout
    counts = records.read_json(os.path.join(workdir, "pie", "tfrecords", "magnitude_0.5",
                                            "counts.json"))
    assert counts["n_pie"] == int(table["is_pie"].sum())


def test_retrained_member_is_predicted_again(tiny_predictions, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(tiny_predictions, workdir)
    row = records.read_manifest(workdir).iloc[2]
    model = os.path.join(workdir, row["model_file"])
    newer = os.stat(Workdir(workdir).predictions_path(row["member_id"])).st_mtime_ns + 10**9
    os.utime(model, ns=(newer, newer))  # as if the member had been trained again
    result = run_stage("pie_dataset_gen.predictions", f"--workdir={workdir}")
    assert "4 members, 3 done, 1 to run" in result.stdout
    assert row["member_id"] in result.stderr  # its progress line


def test_keras_members_give_model_predicts_logits_bit_for_bit(tiny_population):
    """KerasMember runs one traced forward pass per member instead of model.predict:
    the same logits to the bit, whatever the batch size (a short last batch, one
    batch, one image), for uint8 inputs too (cast to the model's input dtype, as the
    model casts what predict gives it),
    and no images give no rows."""
    inputs = np.asarray(sources.load("digits").normalize(sources.load("digits").eval_arrays()[0]),
                        np.float32)
    for row in records.read_manifest(tiny_population).to_dict("records"):
        member = predict.load_member(tiny_population, row)
        assert isinstance(member, predict.KerasMember)
        for batch_size in (1, 64, 100, len(inputs) + 1):
            assert np.array_equal(member.logits(inputs[:150], batch_size),
                                  member.model.predict(inputs[:150], batch_size=batch_size,
                                                       verbose=0)), (row["member_id"], batch_size)
        raw = (inputs[:70] * 16).astype(np.uint8)
        assert np.array_equal(member.logits(raw, 32),
                              member.model.predict(raw, batch_size=32, verbose=0))
        assert member.logits(inputs[:0], 64).shape == (0, member.model.outputs[0].shape[-1])
    # One trace, whatever the batch sizes and input dtypes.
    assert member._forward.experimental_get_tracing_count() == 1


def test_keras_member_batch_size_must_be_positive(tiny_population):
    row = records.read_manifest(tiny_population).iloc[0].to_dict()
    member = predict.load_member(tiny_population, row)
    try:
        member.logits(np.zeros((2, 8, 8, 1), np.float32), 0)
    except ValueError as error:
        assert str(error) == "batch_size must be at least 1, got 0"
    else:
        raise AssertionError("batch_size 0 was accepted")
