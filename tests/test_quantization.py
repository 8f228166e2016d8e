"""TFLite conversion modes (pie.compress.quantize) and the pie.stages.quantize stage."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie.compress import quantize as pq
from pie.io import records
from pie.io.workdir import Workdir
from tests.conftest import error_lines, run_stage

# Float16 weights and int8 weight-only quantization barely move the logits.
MIN_AGREEMENT = 0.95


@pytest.fixture(scope="module")
def digits_model():
    """A small CNN trained briefly on digits, with the eval inputs and its predictions."""
    import tf_keras as keras
    from pie.data import sources
    from pie.models import builders
    source = sources.load("digits")
    keras.utils.set_random_seed(0)
    model = builders.build("small_cnn", source.input_shape, source.num_classes, width=8)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(source.train_batches(64, seed=0, epoch=0), epochs=3, verbose=0)
    images, labels, _ = source.eval_arrays()
    inputs = np.asarray(source.normalize(images), np.float32)
    reference = model(inputs, training=False).numpy().argmax(axis=1)
    return source, model, inputs, reference


def _run_tflite(content, folder, inputs, num_threads=None):
    from pie.models import predict
    os.makedirs(folder)
    path = os.path.join(folder, "model.tflite")
    with open(path, "wb") as handle:
        handle.write(content)
    member = predict.TFLiteMember(path, num_threads=num_threads)
    return member, member.logits(inputs, batch_size=64)


def test_every_mode_converts_and_runs_batched(digits_model, tmp_path):
    source, model, inputs, reference = digits_model
    representative = pq.representative_inputs(source, 32, seed=0)
    for name, mode in pq.MODES.items():
        content = pq.convert(model, name, representative)
        member, logits = _run_tflite(content, str(tmp_path / name), inputs)
        assert logits.shape == (len(inputs), source.num_classes), name
        agreement = np.mean(logits.argmax(axis=1) == reference)
        integer_io = member.input["dtype"] == np.int8 and member.output["dtype"] == np.int8
        assert integer_io == mode.full_int8, name
        if name in ("float16", "dynamic_int8"):
            assert agreement >= MIN_AGREEMENT, (name, agreement)
        else:  # calibrated on 32 images: close, not identical
            assert agreement >= 0.8, (name, agreement)
        # The stages run TFLite members on every core: the same logits, bit for bit.
        _, threaded = _run_tflite(content, str(tmp_path / f"{name}_threads"), inputs,
                                  num_threads=3)
        np.testing.assert_array_equal(threaded, logits, err_msg=name)


def test_concrete_function_path_matches_keras_path(digits_model, tmp_path):
    _, model, inputs, _ = digits_model
    _, keras_path = _run_tflite(pq.convert(model, "float16", path="keras"),
                                str(tmp_path / "k"), inputs)
    _, concrete = _run_tflite(pq.convert(model, "float16", path="concrete_function"),
                              str(tmp_path / "c"), inputs)
    np.testing.assert_allclose(concrete, keras_path, rtol=1e-5, atol=1e-5)


def test_the_default_frozen_path_exports_no_saved_model_and_matches_the_keras_path(
        digits_model, tmp_path, monkeypatch):
    """Every mode converts by freezing the traced function (no SavedModel export, about
    a tenth of the Keras path's CPU time) into a model that predicts as the Keras
    path's does."""
    source, model, inputs, _ = digits_model
    representative = pq.representative_inputs(source, 32, seed=0)
    converted = {name: pq.convert(model, name, representative, path="keras")
                 for name in ("float16", "dynamic_int8", "full_int8")}

    from tensorflow.python.saved_model import save
    exports = []
    export = save.save

    def counted_export(*args, **kwargs):
        exports.append(args)
        return export(*args, **kwargs)
    monkeypatch.setattr(save, "save", counted_export)
    for name, keras_content in converted.items():
        _, frozen = _run_tflite(pq.convert(model, name, representative),
                                str(tmp_path / f"f_{name}"), inputs)
        _, keras_path = _run_tflite(keras_content, str(tmp_path / f"k_{name}"), inputs)
        np.testing.assert_array_equal(frozen, keras_path)
    assert exports == []
    pq.convert(model, "float16", path="keras")  # the count sees the Keras path's export
    assert len(exports) == 1


def test_representative_images_come_from_training_split_seeded(digits_model):
    source = digits_model[0]
    first = pq.representative_inputs(source, 10, seed=3)
    assert first.shape == (10,) + tuple(source.input_shape) and first.dtype == np.float32
    np.testing.assert_array_equal(first, pq.representative_inputs(source, 10, seed=3))
    assert not np.array_equal(first, pq.representative_inputs(source, 10, seed=4))
    train = np.concatenate([x for x, _ in source.train_batches(512, 0, 0).as_numpy_iterator()])
    flat_train = {row.tobytes() for row in train.reshape(len(train), -1)}
    assert all(row.tobytes() in flat_train for row in first.reshape(10, -1))


def test_conversion_errors(digits_model):
    model = digits_model[1]
    with pytest.raises(pq.QuantizeError) as error:
        pq.convert(model, "int4")
    assert str(error.value) == ("unknown quantization mode 'int4'; allowed: float16, "
                                "dynamic_int8, full_int8, sparse, pruned_int8")
    with pytest.raises(pq.QuantizeError) as error:
        pq.convert(model, "full_int8")
    assert str(error.value) == ("mode full_int8 needs representative images to calibrate "
                                "activations")
    with pytest.raises(pq.QuantizeError, match="unknown converter path 'onnx'"):
        pq.convert(model, "float16", path="onnx")
    with pytest.raises(pq.QuantizeError, match="representative images must be at least 1"):
        pq.representative_inputs(digits_model[0], 0, seed=0)


# ------------------------------------------------------------------------ the stage


@pytest.fixture(scope="module")
def quantized(tiny_population, tmp_path_factory):
    """The seed-0 members of the tiny population, converted in every mode."""
    workdir = str(tmp_path_factory.mktemp("quantized") / "w")
    shutil.copytree(tiny_population, workdir)
    manifest = records.read_manifest(workdir)
    records.write_csv(Workdir(workdir).manifest, manifest[manifest["seed"] == 0],
                      list(manifest.columns))
    result = run_stage("pie.stages.quantize", f"--workdir={workdir}", "--modes=all",
                       "--representative_images=16")
    return workdir, manifest[manifest["seed"] == 0], result


def test_quantized_members_carry_their_source_recipe(quantized):
    from pie.compress import recipes
    workdir, originals, _ = quantized
    manifest = records.read_manifest(workdir).set_index("member_id")
    dense = originals[originals["method"] == "dense"].iloc[0]
    meta = records.read_json(Workdir(workdir).member_file(
        manifest.loc["quant_float16_0_seed0", "path"], "meta"))
    assert meta["recipe_settings"] == {"quantize": meta["mode"], "representative_images": 0,
                                       "parent_recipe": dense["recipe"]}
    assert manifest.loc["quant_float16_0_seed0", "recipe"] == recipes.digest(
        meta["recipe_settings"])


def test_stage_adds_one_member_per_source_and_mode(quantized):
    from pie.data import sources
    from pie.models import predict
    workdir, originals, _ = quantized
    manifest = records.read_manifest(workdir).set_index("member_id")
    dense = originals[originals["method"] == "dense"].iloc[0]
    pruned = originals[originals["method"] == "magnitude"].iloc[0]
    expected = {f"quant_{mode}_0_seed0": dense for mode in ("float16", "dynamic_int8",
                                                            "full_int8")}
    expected.update({f"quant_{mode}_0.5_seed0": pruned for mode in ("sparse", "pruned_int8")})
    assert sorted(manifest.index) == sorted(list(originals["member_id"]) + list(expected))
    eval_source = sources.load_for_workdir(workdir)
    for member_id, source_row in expected.items():
        row = manifest.loc[member_id]
        method = member_id.rsplit("_", 2)[0]
        assert row["method"] == method and row["seed"] == 0
        assert row["sparsity"] == source_row["sparsity"]
        assert row["measured_sparsity"] == source_row["measured_sparsity"]
        relpath = f"checkpoints/{method}/sparsity_{source_row['sparsity']:g}/seed_0"
        assert row["path"] == relpath and row["model_file"] == f"{relpath}/model.tflite"
        meta = records.read_json(os.path.join(workdir, relpath, "meta.json"))
        assert meta["source_member_id"] == source_row["member_id"]
        assert os.path.exists(os.path.join(workdir, relpath, "flags.txt"))
        # top1 recomputed here with the TFLite model on the eval split.
        member = predict.TFLiteMember(os.path.join(workdir, row["model_file"]))
        assert row["top1"] == pytest.approx(pq.eval_top1(member, eval_source), abs=1e-6)


def test_rerun_skips_and_members_load_like_any_other(quantized):
    from pie.data import sources
    from pie.models import predict
    workdir, _, _ = quantized
    before = records.read_manifest(workdir)
    model = os.path.join(workdir, before["model_file"].iloc[-1])
    mtime = os.path.getmtime(model)
    rerun = run_stage("pie.stages.quantize", f"--workdir={workdir}", "--modes=all")
    assert "5 already done, 0 to run" in rerun.stdout
    assert os.path.getmtime(model) == mtime
    pd.testing.assert_frame_equal(records.read_manifest(workdir), before)
    # What pie_dataset_gen.predictions does per member: load_member, then the frame.
    images, labels, ids = sources.load_for_workdir(workdir).eval_arrays()
    inputs = np.asarray(sources.load_for_workdir(workdir).normalize(images))
    for row in before[before["method"].str.startswith("quant_")].to_dict("records"):
        member = predict.load_member(workdir, row)
        assert isinstance(member, predict.TFLiteMember)
        assert member.num_threads == predict.TFLITE_THREADS == (os.cpu_count() or 1)
        frame = predict.predictions_frame(row["member_id"], member.logits(inputs, 64),
                                          labels, ids)
        assert (frame["predicted"] == frame["label"]).mean() == pytest.approx(row["top1"])


def test_bad_modes_exit_2_with_one_line(tmp_path):
    result = run_stage("pie.stages.quantize", f"--workdir={tmp_path}", "--modes=float16,int4",
                       check=False)
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: unknown --modes int4; allowed: float16, dynamic_int8, full_int8, sparse, "
        "pruned_int8 or all"]
    assert os.listdir(tmp_path) == []


def test_cost_stage_has_a_row_per_member(quantized):
    import gzip
    import tf_keras as keras
    workdir, _, _ = quantized
    run_stage("pie.stages.cost", f"--workdir={workdir}", "--repeats=2", "--warmup=0")
    manifest = records.read_manifest(workdir)
    cost = pd.read_csv(os.path.join(workdir, "quantization", "cost.csv"))
    assert cost["member_id"].tolist() == manifest["member_id"].tolist()
    assert os.path.exists(os.path.join(workdir, "quantization", "cost.flags.txt"))
    params = {}
    for row in manifest[manifest["model_file"].str.endswith(".keras")].to_dict("records"):
        model = keras.models.load_model(os.path.join(workdir, row["model_file"]), compile=False)
        params[row["member_id"]] = (model.count_params(), sum(
            int(np.count_nonzero(w)) for w in model.get_weights()))
    for row, member in zip(cost.to_dict("records"), manifest.to_dict("records")):
        path = os.path.join(workdir, member["model_file"])
        with open(path, "rb") as handle:
            content = handle.read()
        # userdata: a Keras member's weights are saved again (issue 25.7): the same bytes
        # but the date in its zip, which gzip may code a few bytes longer or shorter.
        slack = 16 if path.endswith(".keras") else 0
        assert abs(row["file_bytes"] - len(content)) <= slack
        assert abs(row["gzip_bytes"] - len(gzip.compress(content, compresslevel=6,
                                                         mtime=0))) <= slack
        assert row["top1"] == member["top1"] and row["gzip_level"] == 6
        assert row["latency_ms_batch1"] > 0 and row["latency_ms_batch32"] > 0
        if path.endswith(".keras"):
            assert row["latency_model"] == "float_tflite"
            assert (row["params"], row["nonzero_params"]) == params[row["member_id"]]
        else:
            source = records.read_json(os.path.join(
                workdir, member["path"], "meta.json"))["source_member_id"]
            assert row["latency_model"] == "member" and row["tflite_bytes"] == len(content)
            assert (row["params"], row["nonzero_params"]) == params[source]
    pruned = cost[cost["member_id"] == "magnitude_0.5_seed0"].iloc[0]
    assert pruned["nonzero_params"] < pruned["params"]


KERAS3_CUT_SCRIPT = """
import sys
import numpy as np
import pie
import tf_keras as keras
from pie.compress import quantize as pq
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.layers.Input((6, 6, 1)), keras.layers.Conv2D(2, 3),
                          keras.layers.Flatten(), keras.layers.Dense(3)])
representative = np.random.default_rng(0).random((4, 6, 6, 1)).astype(np.float32)
modes = [pq.FLOAT_MODE, "float16", "dynamic_int8", "full_int8"]
cut = [pq.convert(model, mode, representative) for mode in modes]
assert "keras" not in sys.modules, "the converter imported Keras 3"
import keras  # Keras 3 loaded: the converter's own check runs
assert keras.__version__.startswith("3")
checked = [pq.convert(model, mode, representative) for mode in modes]
assert cut == checked, "the converted bytes differ"
print("same bytes")
"""


def test_converting_tf_keras_skips_the_keras3_import_with_the_same_bytes():
    """The converter's Keras 3 check is answered without importing Keras 3, and every
    mode's bytes are those of a conversion that ran the check."""
    import subprocess
    import sys
    from tests.conftest import ROOT
    done = subprocess.run([sys.executable, "-c", KERAS3_CUT_SCRIPT], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("same bytes"), \
        done.stderr[-2000:]
