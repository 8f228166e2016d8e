"""save_checkpoint.import_members: Keras and TFLite files made elsewhere become members."""
import os

import numpy as np
import pytest

import pie  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
from pie.io import errors, records
from pie.io.workdir import Workdir
from save_checkpoint import import_members
from test_lineage import digits_model


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory):
    """Two Keras files (seeds 3 and 7) with half the first kernel zeroed, and the
    TFLite conversion of one; the expected top-1 and sparsity computed directly."""
    from pie.compress import quantize as pq
    from pie.data import sources
    folder = tmp_path_factory.mktemp("elsewhere")
    source = sources.load("digits")
    expected = {}
    for seed in (3, 7):
        path = str(folder / f"net_seed{seed}.keras")
        model = digits_model(path, epochs=seed // 3)
        hidden = model.layers[1]  # Dense(24) after Flatten
        kernel = hidden.kernel.numpy()
        kernel.ravel()[::2] = 0
        hidden.kernel.assign(kernel)
        model.save(path)
        images, labels, _ = source.eval_arrays()
        logits = model(source.normalize(images), training=False).numpy()
        zeros = sum(int((layer.kernel.numpy() == 0).sum()) for layer in model.layers[1:])
        total = sum(layer.kernel.numpy().size for layer in model.layers[1:])
        expected[seed] = (float(np.mean(logits.argmax(1) == labels)), zeros / total)
    with open(folder / "net_seed7.tflite", "wb") as handle:
        import tf_keras as keras
        handle.write(pq.convert(keras.models.load_model(str(folder / "net_seed7.keras")),
                                pq.FLOAT_MODE))
    return str(folder), expected


def test_keras_and_tflite_members_with_top1_and_sparsity(made_elsewhere, tmp_path):
    folder, expected = made_elsewhere
    workdir = str(tmp_path / "w")
    import_members.run(workdir=workdir, dataset="digits", models=f"{folder}/*.keras",
                       method="dense", seed_from=r"regex:seed(\d+)")
    import_members.run(workdir=workdir, models=f"{folder}/*.tflite", method="ext_float",
                       seed_from=r"regex:seed(\d+)")
    manifest = records.read_manifest(workdir).set_index("member_id")
    assert list(manifest.index) == ["dense_0_seed3", "dense_0_seed7", "ext_float_0_seed7"]
    for member_id, seed in (("dense_0_seed3", 3), ("dense_0_seed7", 7),
                            ("ext_float_0_seed7", 7)):
        top1, sparsity = expected[seed]
        assert manifest.loc[member_id, "top1"] == pytest.approx(top1, abs=1e-6)
        assert manifest.loc[member_id, "measured_sparsity"] == pytest.approx(sparsity, abs=1e-6)
    row = manifest.loc["ext_float_0_seed7"]
    assert row["model_file"] == "checkpoints/ext_float/sparsity_0/seed_7/model.tflite"
    assert row["model"] == "import-net_seed7.tflite"
    copied = Workdir(workdir).model_path(row)
    assert open(copied, "rb").read() == open(f"{folder}/net_seed7.tflite", "rb").read()
    meta = records.read_json(Workdir(workdir).member_file(row["path"], "meta"))
    assert meta["source_file"] == f"{folder}/net_seed7.tflite" and meta["imported"]
    assert records.read_json(Workdir(workdir).dataset_config)["dataset"] == "digits"
    # A rerun adds nothing; another file for an existing member needs --force.
    before = open(Workdir(workdir).manifest).read()
    import_members.run(workdir=workdir, models=f"{folder}/*.keras", method="dense",
                       seed_from=r"regex:seed(\d+)")
    assert open(Workdir(workdir).manifest).read() == before
    other = tmp_path / "other_seed3.keras"
    other.write_bytes(open(f"{folder}/net_seed7.keras", "rb").read())
    with pytest.raises(errors.ContractError, match="^member dense_0_seed3 exists in .* from "
                       "another file than .*other_seed3.keras: --force replaces it$"):
        import_members.run(workdir=workdir, models=str(other), method="dense",
                           seed_from=r"regex:seed(\d+)")


def test_wrong_shape_or_unsafe_file_is_one_error_and_nothing_is_written(tmp_path):
    wrong = str(tmp_path / "wide.keras")
    digits_model(wrong, input_shape=(28, 28, 1), epochs=0)
    workdir = str(tmp_path / "w")
    with pytest.raises(errors.ContractError) as caught:
        import_members.run(workdir=workdir, dataset="digits", models=wrong, method="dense")
    assert str(caught.value) == (f"model {wrong} takes inputs (28, 28, 1) and gives 10 "
                                 "outputs; dataset 'digits' has inputs (8, 8, 1) and 10 classes")
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n not a zip")
    with pytest.raises(errors.InputError, match=r"is refused: it does not begin with a zip entry"):
        import_members.run(workdir=workdir, dataset="digits", models=str(fake), method="dense")
    with pytest.raises(errors.UsageError, match=r"^--models=.*nothing\*\.keras matches no "
                       r"file$"):
        import_members.run(workdir=workdir, dataset="digits",
                           models=str(tmp_path / "nothing*.keras"), method="dense")
    with pytest.raises(errors.UsageError, match="^dense members have sparsity 0, got "
                       "--sparsity=0.5$"):
        import_members.run(workdir=workdir, dataset="digits", models=wrong, method="dense",
                           sparsity=0.5)
    assert not os.path.exists(workdir)
