"""Bad input, stage by stage: one line of error, nothing written, nothing outside W.

`CASES` is a table of (stage, how the input is broken, expected message). Each case
copies a small prepared workdir, breaks it, runs the stage in this process through its
Python `run` function (errors.InputError is what a command reports as `error: ...`
and exit 2), and checks the message and that no file in or beside the workdir
changed (names, sizes and SHA-256 digests). A new stage joins with one row.

Only the model-loading cases touch TensorFlow; the tiny model is saved once.
"""
import hashlib
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie.io import errors, records
from pie.io.workdir import Workdir

N_IMAGES = 40
N_CLASSES = 10
MEMBERS = [("dense", 0.0, 0), ("dense", 0.0, 1), ("magnitude", 0.5, 0), ("magnitude", 0.5, 1)]


# ----------------------------------------------------------------------- workdir


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A zip .keras model and its .tflite conversion (digits: 8x8x1, 10 classes)."""
    import tensorflow as tf
    import tf_keras as keras
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("models")
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(N_CLASSES)])
    model.save(str(folder / "model.keras"))
    (folder / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return folder


def _member_id(method, sparsity, seed):
    return f"{records.variant_key(method, sparsity)}_seed{seed}"


def _make_workdir(workdir, models):
    wd = Workdir(workdir)
    os.makedirs(workdir)
    names = [f"digit {k}" for k in range(N_CLASSES)]
    records.write_json(wd.dataset_config, {
        "dataset": "digits", "data_dir": None, "label_attribute": None, "toy_noise": None,
        "toy_seed": None, "num_classes": N_CLASSES, "class_names": names, "family": "small"})
    records.write_json(wd.classes, names)
    rng = np.random.default_rng(0)
    labels = np.arange(N_IMAGES) % N_CLASSES
    rows = []
    for method, sparsity, seed in MEMBERS:
        member_id = _member_id(method, sparsity, seed)
        relpath = Workdir.member_relpath(method, sparsity, seed)
        model_file = Workdir.member_relfile(relpath, "keras_model")
        os.makedirs(wd.member_dir(relpath))
        shutil.copy(os.path.join(models, "model.keras"), wd.path(model_file))
        rows.append({"member_id": member_id, "method": method, "sparsity": sparsity,
                     "measured_sparsity": sparsity, "seed": seed, "dataset": "digits",
                     "model": "small_cnn", "top1": 0.8, "path": relpath,
                     "model_file": model_file})
        predicted = np.where(rng.random(N_IMAGES) < 0.8, labels, (labels + 1) % N_CLASSES)
        records.write_predictions(wd.predictions_path(member_id), pd.DataFrame({
            "member_id": member_id, "image_id": np.arange(N_IMAGES), "label": labels,
            "predicted": predicted, "prob_predicted": np.float32(0.7),
            "prob_label": np.float32(0.5)}))
    records.add_manifest_rows(workdir, rows)
    from pie_dataset_gen import aggregate_predictions
    aggregate_predictions.run(workdir)
    return workdir


@pytest.fixture(scope="module")
def base(tiny_models, tmp_path_factory):
    return _make_workdir(str(tmp_path_factory.mktemp("base") / "w"), str(tiny_models))


def snapshot(folder):
    """{relative path: (kind, size, sha256 or link target)} of everything under folder."""
    found = {}
    for root, subfolders, names in os.walk(folder, followlinks=False):
        for name in names + [s for s in subfolders if os.path.islink(os.path.join(root, s))]:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[key] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as handle:
                    found[key] = ("file", os.path.getsize(path),
                                  hashlib.sha256(handle.read()).hexdigest())
        for name in subfolders:
            found.setdefault(os.path.relpath(os.path.join(root, name), folder) + "/", ("dir",))
    return found


# ------------------------------------------------------------------- how to break


def edit_manifest(member, **values):
    def breaker(w, _models):
        path = Workdir(w).manifest
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column, value in values.items():
            frame.loc[frame["member_id"] == member, column] = value
        frame.to_csv(path, index=False)
    return breaker


def edit_dataset_json(**values):
    def breaker(w, _models):
        config = records.read_json(Workdir(w).dataset_config)
        records.write_json(Workdir(w).dataset_config, dict(config, **values))
    return breaker


def write_file(relative, content):
    def breaker(w, _models):
        path = os.path.join(w, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(content, bytes) else "w") as handle:
            handle.write(content)
    return breaker


def hdf5_lambda_model(w, _models):
    """dense_0_seed0's model.keras becomes an HDF5 file whose Lambda writes a marker."""
    import tf_keras as keras
    marker = os.path.join(os.path.dirname(w), "lambda_ran")
    action = eval(f"lambda x: (__import__('pathlib').Path({marker!r}).write_text('ran'), x)[1]")
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Lambda(action),
                              keras.layers.Flatten(), keras.layers.Dense(N_CLASSES)])
    path = os.path.join(w, Workdir.member_relpath("dense", 0, 0), "model.h5")
    model.save(path)
    os.replace(path, os.path.join(os.path.dirname(path), "model.keras"))
    os.remove(marker)  # building the model ran it once


def guessing_model(w, _models):
    """dense_0_seed0's model.keras answers class 0 for every image (zero weights): a
    model at chance whatever the data (issue 25)."""
    import tf_keras as keras
    path = os.path.join(w, Workdir.member_relpath("dense", 0, 0), "model.keras")
    model = keras.models.load_model(path, compile=False)
    model.set_weights([np.zeros_like(weight) for weight in model.get_weights()])
    model.save(path)


def tflite_member(cut):
    """magnitude_0.5_seed1 becomes a TFLite member whose file is cut to `cut` of its bytes."""
    def breaker(w, models):
        relpath = Workdir.member_relpath("magnitude", 0.5, 1)
        with open(os.path.join(models, "model.tflite"), "rb") as handle:
            content = handle.read()
        with open(os.path.join(w, relpath, "model.tflite"), "wb") as handle:
            handle.write(content[:int(len(content) * cut)])
        edit_manifest("magnitude_0.5_seed1", model_file=f"{relpath}/model.tflite")(w, models)
    return breaker


def other_input_model(two_inputs):
    """dense_0_seed0's model.keras takes 4x4x1 images, or two 8x8x1 inputs (an imported
    model of other data)."""
    def breaker(w, _models):
        import tf_keras as keras
        if two_inputs:
            first, second = keras.layers.Input((8, 8, 1)), keras.layers.Input((8, 8, 1))
            flat = keras.layers.Flatten()(keras.layers.Add()([first, second]))
            model = keras.Model([first, second], keras.layers.Dense(N_CLASSES)(flat))
        else:
            model = keras.Sequential([keras.layers.Input((4, 4, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(N_CLASSES)])
        model.save(os.path.join(w, DENSE0, "model.keras"))
    return breaker


def link_member_folder_out(w, _models):
    """checkpoints/dense is a link to a folder beside the workdir holding the models."""
    outside = os.path.join(os.path.dirname(w), "outside")
    shutil.move(os.path.join(w, "checkpoints", "dense"), outside)
    os.symlink(outside, os.path.join(w, "checkpoints", "dense"))


def truncate_manifest(w, _models):
    path = Workdir(w).manifest
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text[:len(text) - 30])


def predictions_of(member_id, change):
    """Rewrites one member's clean predictions with `change(frame)`."""
    def breaker(w, _models):
        path = Workdir(w).predictions_path(member_id)
        frame = change(pd.read_parquet(path))
        records.write_predictions(path, frame)
    return breaker


def remove(relative):
    def breaker(w, _models):
        os.remove(os.path.join(w, relative))
    return breaker


def edit_pie_csv(forget=False, **values):
    """Edits pie.csv by hand; with `forget`, also deletes the record of what was written."""
    def breaker(w, _models):
        path = Workdir(w).file("pie")
        frame = pd.read_csv(path)
        for column, value in values.items():
            frame[column] = value
        frame.to_csv(path, index=False)
        if forget:
            records.forget_written(path)
    return breaker


def cut(relative, keep=0.5):
    """Cuts a file the toolkit wrote to `keep` of its bytes (a kill, a full disk)."""
    def breaker(w, _models):
        path = os.path.join(w, relative)
        with open(path, "rb") as handle:
            content = handle.read()
        with open(path, "wb") as handle:
            handle.write(content[:int(len(content) * keep)])
    return breaker


def nothing(w, _models):
    pass


def zip_not_keras(w, _models):
    """dense_0_seed0's model.keras is a zip archive, but not of a Keras model."""
    path = os.path.join(w, DENSE0, "model.keras")
    os.remove(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


def folder_for_model(w, _models):
    path = os.path.join(w, DENSE0, "model.keras")
    os.remove(path)
    os.makedirs(path)


def tfrecord_data(damage):
    """dataset.json points at a TFRecord folder beside W (the eval split's 40 images),
    then `damage(path of its one shard)` breaks it; the folder is scanned first, so a
    size cache a valid scan writes is there before the stage runs."""
    def breaker(w, _models):
        import io
        import tensorflow as tf
        from PIL import Image
        from pie.data import tfrecords
        folder = os.path.join(os.path.dirname(w), "data")
        os.makedirs(folder)
        shard = os.path.join(folder, "validation-00000-of-00001")
        rng = np.random.default_rng(0)
        with tf.io.TFRecordWriter(shard) as writer:
            for k in range(N_IMAGES):
                encoded = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(encoded, "PNG")
                feature = {
                    "image/encoded": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[encoded.getvalue()])),
                    "image/class/label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[k % N_CLASSES])),
                    "image_id": tf.train.Feature(int64_list=tf.train.Int64List(value=[k]))}
                writer.write(tf.train.Example(
                    features=tf.train.Features(feature=feature)).SerializeToString())
        records.write_json(os.path.join(folder, tfrecords.INFO_NAME), {
            "label_offset": 0, "num_classes": N_CLASSES, "num_examples": N_IMAGES})
        damage(shard)
        try:
            tfrecords.Folder(folder)
        except errors.InputError:
            pass  # the stage says so
        config = records.read_json(Workdir(w).dataset_config)
        records.write_json(Workdir(w).dataset_config, dict(config, dataset=f"tfrecord:{folder}"))
    return breaker


def cut_bytes(keep):
    """`keep(size)` of a file's bytes stay."""
    def damage(path):
        with open(path, "rb") as handle:
            content = handle.read()
        with open(path, "wb") as handle:
            handle.write(content[:keep(len(content))])
    return damage


def garbage(path):
    with open(path, "wb") as handle:
        handle.write(b"not a TFRecord file " * 20)


def bad_image(path):
    """The 8th record's PNG is cut to its first 20 bytes (its header still says PNG)."""
    import tensorflow as tf
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    image = examples[7].features.feature["image/encoded"].bytes_list
    image.value[0] = image.value[0][:20]
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example.SerializeToString())


def robustness_tables(then):
    """robustness_tests.analyze's tables are written (clean only), then `then` breaks W."""
    def breaker(w, models):
        from robustness_tests import analyze
        analyze.run(w)
        then(w, models)
    return breaker


def toy_results_written(w, _models):
    """toy/results.csv as the toy stage records it (rows, digest in its stamp)."""
    records.write_csv(os.path.join(w, "toy", "results.csv"), pd.DataFrame({
        "dataset": "moons", "criterion": "lrp", "samples_per_class": [1, 2, 5, 10],
        "seed": 0, "scenario": "train", "stage": "after", "accuracy": 0.75}))


def toy_run_of_other_settings(w, _models):
    records.write_json(os.path.join(w, "toy", "run_config.json"), {"width": 999})


# ------------------------------------------------------------------------ stages


def _stage(name):
    """The Python entry point of a stage, called with the workdir and its options."""
    import importlib
    module = importlib.import_module(name)
    if name in POSITIONAL:
        return lambda w, **options: module.run(w, **options)
    if name in NO_WORKDIR:  # W only through its options (`out`)
        return lambda w, **options: module.run(**options)
    return lambda w, **options: module.run(workdir=w, **options)


POSITIONAL = {"per_class_accuracy.aggregate_ckpt_metrics", "per_class_accuracy.gen_tstatistic",
              "per_class_accuracy.subgroups", "pie_dataset_gen.aggregate_predictions",
              "robustness_tests.analyze"}

PREDICT = "pie_dataset_gen.predictions"
TSTAT = "per_class_accuracy.gen_tstatistic"
METRICS = "per_class_accuracy.aggregate_ckpt_metrics"
AGGREGATE = "pie_dataset_gen.aggregate_predictions"
ANALYZE = "robustness_tests.analyze"
SUBGROUPS = "per_class_accuracy.subgroups"
PIE_RECORDS = "pie_dataset_gen.generate_pie_dataset"
REPORT = "pie.report.build"
COST = "pie.stages.cost"
QUANTIZE = "pie.stages.quantize"
TRAIN = "save_checkpoint.train"
CORRUPTIONS = "robustness_tests.corruptions"
NOISE = "robustness_tests.noise_similarity"
FEATURES = "robustness_tests.informative_features"
TOY = "pie.stages.toy_experiment"
IMPORT = "save_checkpoint.import_members"
STUDY = "pie.stages.study"
NO_WORKDIR = {TOY}
NOISE_FLOOR = "per_class_accuracy.noise_floor"
MIN_ERRORS = ("min_errors must be an integer >= 0 (default: the members of the smaller "
              "population), got {}")
SEVERITY_NINE = "--severities: severity must be an integer in 1..5, got 9"
RESAMPLE_SEED = "resample_seed must be an integer >= 0, got -1"
CORRECTION = "correction 'holm' is not allowed: use one of ['none', 'bh', 'bh_all']"
# The smallest run of the image stages: one corruption, one draw, a few images.
CORRUPTIONS_OPTIONS = {"corruptions": "gaussian_noise", "severities": "1", "workers": 1}
NOISE_OPTIONS = {"eps_values": [0.1], "draws": 1, "images": 10}
FEATURES_OPTIONS = {"images": 4}
MANIFEST = "{W}/population.csv"
# The base workdir's whole population: train has nothing to do, and checks every flag.
TRAIN_ALL_DONE = {"dataset": "digits", "sparsities": "0,0.5", "seeds": 2}
DENSE0 = "checkpoints/dense/sparsity_0/seed_0"
M1 = "checkpoints/magnitude/sparsity_0.5/seed_1"
GATE_ALLOWED = ("allowed: the zip tf_keras 2 writes, of built-in layers without Lambda "
                "(docs/contracts.md, 'Model files are data')")
NOT_ZIP = (f"model file {{W}}/{DENSE0}/model.keras is refused: it does not begin with a zip "
           "entry (an HDF5 or other file: those can run code when loaded); " + GATE_ALLOWED)
ZIP_NOT_KERAS = (f"model file {{W}}/{DENSE0}/model.keras is refused: it holds entries "
                 "'notes.txt'; a tf_keras .keras file holds exactly metadata.json, "
                 "config.json, model.weights.h5; " + GATE_ALLOWED)

# (id, stage, options, breaker, expected message; {W} is the workdir, {P} its folder)
CASES = [
    # --- code execution: only zip .keras with safe_mode, checked .tflite
    ("keras-hdf5-lambda", PREDICT, {}, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("keras-hdf5-lambda", QUANTIZE, {"modes": "float16"}, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("keras-hdf5-lambda", COST, {"repeats": 1, "warmup": 0}, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("tflite-truncated", PREDICT, {}, tflite_member(0.5),
     f"^manifest member magnitude_0.5_seed1: model file {{W}}/{M1}/model.tflite is a "
     r"truncated or corrupt TFLite flatbuffer \(.+\)$"),
    ("tflite-truncated", COST, {"repeats": 1, "warmup": 0}, tflite_member(0.5),
     f"^manifest member magnitude_0.5_seed1: model file {{W}}/{M1}/model.tflite is a "
     r"truncated or corrupt TFLite flatbuffer \(.+\)$"),
    ("tflite-empty", PREDICT, {}, tflite_member(0),
     f"manifest member magnitude_0.5_seed1: model file {{W}}/{M1}/model.tflite is not a "
     "TFLite flatbuffer (no TFL3 identifier)"),
    ("model-not-zip", PREDICT, {}, write_file(f"{DENSE0}/model.keras", "not a model"),
     "manifest member dense_0_seed0: " + NOT_ZIP),
    # --- escaping the workdir: names and paths of the manifest
    ("member-id-dotdot", PREDICT, {}, edit_manifest("dense_0_seed0", member_id="../../escaped"),
     f"{MANIFEST} row 1 (member_id '../../escaped'): member_id '../../escaped' is not "
     "allowed: use letters, digits and '._-', starting with a letter or digit"),
    ("method-dotdot", TSTAT, {}, edit_manifest("magnitude_0.5_seed0", method="../../x"),
     f"{MANIFEST} row 3 (member_id 'magnitude_0.5_seed0'): method '../../x' is not allowed: "
     "use letters, digits and '._-', starting with a letter or digit"),
    ("pie-method-dotdot", PIE_RECORDS, {"force": True},
     edit_pie_csv(forget=True, method="../../x"),
     "{W}/pie/pie.csv row 1: method '../../x' is not allowed: use letters, digits and "
     "'._-', starting with a letter or digit"),
    ("model-file-absolute", PREDICT, {},
     edit_manifest("dense_0_seed1", model_file="/tmp/elsewhere/model.keras"),
     f"{MANIFEST} row 2 (member_id 'dense_0_seed1'): model_file '/tmp/elsewhere/model.keras' "
     "must be a path relative to the workdir"),
    ("model-file-dotdot", COST, {},
     edit_manifest("dense_0_seed1", model_file="../outside/model.keras"),
     f"{MANIFEST} row 2 (member_id 'dense_0_seed1'): model_file '../outside/model.keras' "
     "must not hold '..', '.' or empty parts"),
    ("member-folder-linked-out", PREDICT, {}, link_member_folder_out,
     f"{MANIFEST} row 1 (member_id 'dense_0_seed0'): path '{DENSE0}' leads outside the "
     "workdir through a symbolic link"),
    # --- silent acceptance: the manifest's members
    ("duplicate-member-id", TSTAT, {}, edit_manifest("dense_0_seed1", member_id="dense_0_seed0"),
     f"{MANIFEST} row 2 (member_id 'dense_0_seed0'): member_id listed twice: every member "
     "is one row"),
    ("same-member-twice", METRICS, {}, edit_manifest("magnitude_0.5_seed1", seed="0"),
     f"{MANIFEST} row 4 (member_id 'magnitude_0.5_seed1'): the same member (method "
     "magnitude, sparsity 0.5, seed 0) as 'magnitude_0.5_seed0'"),
    ("sparsity-not-a-number", ANALYZE, {}, edit_manifest("magnitude_0.5_seed1", sparsity="half"),
     f"{MANIFEST} row 4 (member_id 'magnitude_0.5_seed1'): sparsity 'half' is not a number "
     "in [0, 1)"),
    ("manifest-truncated", REPORT, {}, truncate_manifest,
     f"^{MANIFEST} row 4 \\(member_id 'magnitude_0.5_seed1'\\): model_file "
     "'checkpoints/magnitude/sp' must end in .keras or .tflite$"),
    ("manifest-truncated", AGGREGATE, {}, truncate_manifest,
     f"^{MANIFEST} row 4 \\(member_id 'magnitude_0.5_seed1'\\): model_file "
     "'checkpoints/magnitude/sp' must end in .keras or .tflite$"),
    # --- robustness_tests.analyze reads like every other analysis stage
    ("predictions-missing", ANALYZE, {}, remove("predictions/test/clean/dense_0_seed1.parquet"),
     "no predictions for member dense_0_seed1 on clean in {W}/predictions/test/clean "
     "(1 of 4 members missing): run pie_dataset_gen.predictions for them"),
    ("predictions-short", ANALYZE, {}, predictions_of("dense_0_seed1", lambda f: f.iloc[:30]),
     "members dense_0_seed0 and dense_0_seed1 have predictions on different image sets; "
     "rerun pie_dataset_gen.predictions for both"),
    ("predictions-duplicate-ids", ANALYZE, {},
     predictions_of("dense_0_seed0", lambda f: f.assign(image_id=f["image_id"] // 2)),
     "{W}/predictions/test/clean/dense_0_seed0.parquet lists image 0 more than once: rerun "
     "pie_dataset_gen.predictions"),
    ("label-out-of-range", ANALYZE, {},
     predictions_of("dense_0_seed1", lambda f: f.assign(predicted=f["predicted"] + 10)),
     "^predicted 1[0-9] of image 0 \\(member dense_0_seed1\\) is outside the class range "
     "0..9 \\({W}/classes.json lists 10 classes\\)$"),
    ("labels-disagree", ANALYZE, {},
     predictions_of("dense_0_seed1", lambda f: f.assign(label=(f["label"] + 1) % 10)),
     "members disagree on the label of image 0: the predictions files must come from one "
     "eval set"),
    # --- truncation: tables differ from what their writer recorded
    ("pie-csv-cut", PIE_RECORDS, {"force": True}, cut("pie/pie.csv"),
     r"^{W}/pie/pie.csv changed after pie_dataset_gen.aggregate_predictions wrote it "
     r"\(40 rows, [0-9]+ bytes; now [0-9]+ bytes\): truncated or edited\? rerun "
     r"pie_dataset_gen.aggregate_predictions$"),
    ("pie-csv-edited", SUBGROUPS, {"groups_csv": "{W}/groups.csv"},
     lambda w, m: (write_file("groups.csv", "image_id,colour\n" + "".join(
         f"{k},{'red' if k % 2 else 'blue'}\n" for k in range(N_IMAGES)))(w, m),
         edit_pie_csv(is_pie=False)(w, m)),
     r"^{W}/pie/pie.csv changed after pie_dataset_gen.aggregate_predictions wrote it "
     r"\(40 rows, [0-9]+ bytes; now [0-9]+ bytes\): truncated or edited\? rerun "
     r"pie_dataset_gen.aggregate_predictions$"),
    ("predictions-cut", TSTAT, {}, cut("predictions/test/clean/magnitude_0.5_seed0.parquet"),
     r"^{W}/predictions/test/clean/magnitude_0.5_seed0.parquet changed after its stage "
     r"wrote it \(40 rows, [0-9]+ bytes; now [0-9]+ bytes\): truncated or edited\? rerun "
     r"the stage that writes it$"),
    # --- hand-edited side files
    ("classes-json-shape", TSTAT, {}, write_file("classes.json", '{"a": 1}'),
     "{W}/classes.json must hold a non-empty JSON list of class names (strings)"),
    ("dataset-json-shape", PREDICT, {"force": True}, write_file("dataset.json", "[1, 2]"),
     "{W}/dataset.json must be a JSON object with at least a 'dataset' name"),
    ("dataset-json-type", PREDICT, {"force": True}, write_file("dataset.json", '{"dataset": 7}'),
     "{W}/dataset.json: 'dataset' must be a dataset name, got 7"),
    ("groups-csv-columns", SUBGROUPS, {"groups_csv": "{W}/groups.csv"},
     write_file("groups.csv", "picture,colour\n0,red\n"),
     "groups file {W}/groups.csv has no 'image_id' column; it needs 'image_id' and one "
     "column per attribute"),
    ("toy-results-empty", REPORT, {}, write_file("toy/results.csv", ""),
     "^{W}/toy/results.csv is not listed in {W}/toy/.toy_experiment.stamp.json: only files "
     "pie.stages.toy_experiment wrote are read; rerun pie.stages.toy_experiment$"),
    # --- flags
    ("batch-size-zero", PREDICT, {"batch_size": 0}, nothing,
     "--batch_size must be at least 2, got 0"),
    ("batch-size-zero", TRAIN, {"batch_size": 0, "dataset": "digits"}, nothing,
     "--batch_size must be at least 1, got 0"),
    ("sparsities-same-member", TRAIN, {"sparsities": "0,0.5,0.5000001", "dataset": "digits"},
     nothing, "--sparsities has duplicates at the precision of member names (6 significant "
     "digits): '0,0.5,0.5000001'"),
    ("sparsities-minus-zero", TRAIN, {"sparsities": "0,-0.0", "dataset": "digits"}, nothing,
     "--sparsities has duplicates at the precision of member names (6 significant digits): "
     "'0,-0.0'"),
    ("study-train-flag", STUDY, {"learning_rate": 0}, nothing,
     "--learning_rate must be a finite number > 0, got 0.0"),
    # train: every flag checked though every member of the population exists
    ("learning-rate-negative", TRAIN, dict(TRAIN_ALL_DONE, learning_rate=-1), nothing,
     "--learning_rate must be a finite number > 0, got -1.0"),
    ("learning-rate-nan", TRAIN, dict(TRAIN_ALL_DONE, learning_rate="nan"), nothing,
     "--learning_rate must be a finite number > 0, got nan"),
    ("label-smoothing-two", TRAIN, dict(TRAIN_ALL_DONE, label_smoothing=2), nothing,
     "--label_smoothing must be in [0, 1), got 2.0"),
    ("width-zero", TRAIN, dict(TRAIN_ALL_DONE, width=0), nothing,
     "--width must be at least 1, got 0"),
    ("power-nan", TRAIN, dict(TRAIN_ALL_DONE, power="nan"), nothing,
     "--power must be a finite number > 0, got nan"),
    ("initial-sparsity-one", TRAIN, dict(TRAIN_ALL_DONE, initial_sparsity=1), nothing,
     "--initial_sparsity must be in [0, 1), got 1.0"),
    ("frequency-zero", TRAIN, dict(TRAIN_ALL_DONE, frequency=0), nothing,
     "--frequency must be at least 1 (-1: automatic), got 0"),
    ("begin-step-negative", TRAIN, dict(TRAIN_ALL_DONE, begin_step=-5), nothing,
     "--begin_step must be at least -1 (-1: automatic), got -5"),
    ("steps-per-epoch-zero", TRAIN, dict(TRAIN_ALL_DONE, steps_per_epoch=0), nothing,
     "--steps_per_epoch must be at least 1, got 0"),
    ("toy-noise-negative", TRAIN, dict(TRAIN_ALL_DONE, toy_noise=-1), nothing,
     "--toy_noise must be a finite number >= 0, got -1.0"),
    ("toy-seed-negative", TRAIN, dict(TRAIN_ALL_DONE, toy_seed=-1), nothing,
     "--toy_seed must be at least 0, got -1"),
    ("label-offset-negative", TRAIN, dict(TRAIN_ALL_DONE, label_offset=-1), nothing,
     "--label_offset must be at least 0, got -1"),
    # issue 28
    ("m-by-n-m-not-below-n", TRAIN, dict(TRAIN_ALL_DONE, method="m_by_n", m_by_n="5,4",
                                          sparsities="0.5"), nothing,
     "--m_by_n must be m,n with integers 0 < m < n (at least m zeros in every n "
     "consecutive weights), got '5,4'"),
    ("clusters-one", TRAIN, dict(TRAIN_ALL_DONE, method="cluster", clusters=1,
                                 sparsities="0"), nothing, "--clusters must be at least 2, got 1"),
    ("temperature-zero", TRAIN, dict(TRAIN_ALL_DONE, method="distill", temperature=0,
                                     sparsities="0"), nothing,
     "--temperature must be a finite number > 0, got 0.0"),
    ("pqat-without-pruned-parent", TRAIN, dict(TRAIN_ALL_DONE, method="pqat",
                                               sparsities="0.9"), nothing,
     "--method=pqat keeps the zeros of a pruned parent: the workdir has no magnitude member "
     "at sparsity 0.9 of seed 0; train it first (--method=magnitude) or name its method "
     "with --parent_method"),
    ("qat-with-pruned-levels", TRAIN, dict(TRAIN_ALL_DONE, method="qat"), nothing,
     "--method=qat removes no weights: train it with --sparsities=0, got '0,0.5'"),
    ("qat-mixed-precision", TRAIN, dict(TRAIN_ALL_DONE, method="qat", sparsities="0",
                                        precision="mixed_bfloat16"), nothing,
     "--method=qat trains tfmot's quantization-aware layers, which take float32 layers "
     "only: train it with --precision=float32, got --precision=mixed_bfloat16"),
    ("pqat-mixed-precision", TRAIN, dict(TRAIN_ALL_DONE, method="pqat", sparsities="0.5",
                                         precision="mixed_float16"), nothing,
     "--method=pqat trains tfmot's quantization-aware layers, which take float32 layers "
     "only: train it with --precision=float32, got --precision=mixed_float16"),
    ("cluster-mixed-precision", TRAIN, dict(TRAIN_ALL_DONE, method="cluster", sparsities="0",
                                            precision="mixed_bfloat16"), nothing,
     "--method=cluster trains tfmot's clustered layers, which take float32 layers only: "
     "train it with --precision=float32, got --precision=mixed_bfloat16"),
    ("m-by-n-other-sparsity", TRAIN, dict(TRAIN_ALL_DONE, method="m_by_n", sparsities="0.9"),
     nothing, "--method=m_by_n with --m_by_n=2,4 records its members at sparsity 0.5: "
     "--sparsities must be 0.5 (or 0,0.5), got '0.9'"),
    ("finetune-epochs-negative", TRAIN, dict(TRAIN_ALL_DONE, finetune_epochs=-1), nothing,
     "--finetune_epochs must be at least 0, got -1"),
    ("seeds-huge", TRAIN, dict(TRAIN_ALL_DONE, seeds=10000000000), nothing,
     "--seeds must be in [1, 10000], got 10000000000"),
    ("population-huge", TRAIN, dict(TRAIN_ALL_DONE, seeds=5000, sparsities="0,0.5,0.9"),
     nothing, "the population has 3 sparsity levels x 5000 seeds = 15000 members; at most "
     "10000 a run"),
    ("method-dense", TRAIN, dict(TRAIN_ALL_DONE, method="dense"), nothing,
     "--method names how members with sparsity > 0 are pruned; allowed: magnitude, wt, "
     "sipp, sipp_mean, weight, grad, taylor, lrp, filter_l1, m_by_n, qat, pqat, cluster, distill"),
    ("seeds-not-a-number", TRAIN, dict(TRAIN_ALL_DONE, seeds="two"), nothing,
     "--seeds must be an integer, got 'two'"),
    ("batch-size-zero", CORRUPTIONS, dict(CORRUPTIONS_OPTIONS, batch_size=0), nothing,
     "--batch_size must be at least 1, got 0"),
    ("batch-size-zero", NOISE, dict(NOISE_OPTIONS, batch_size=0), nothing,
     "--batch_size must be >= 1, got 0"),
    ("batch-size-zero", FEATURES, dict(FEATURES_OPTIONS, batch_size=0), nothing,
     "--batch_size must be >= 1, got 0"),
    ("batch-size-zero", QUANTIZE, {"modes": "float16", "batch_size": 0}, nothing,
     "--batch_size must be at least 1, got 0"),
    ("batch-size-zero", IMPORT, {"models": "{W}/x.keras", "method": "dense", "batch_size": 0},
     nothing, "--batch_size must be at least 1, got 0"),
    ("batch-size-zero", TOY, {"batch_size": 0, "out": "{W}/toy"}, nothing,
     "batch_size must be a positive integer, got 0"),
    ("delta-not-a-number", ANALYZE, {"delta": float("nan")}, nothing,
     "--delta must be a finite number >= 0 (percentage points), got nan"),
    ("eps-negative", NOISE, dict(NOISE_OPTIONS, eps_values=[-0.1]), nothing,
     "--eps values must be in [0, 1], got [-0.1]"),
    ("skip-unknown", STUDY, {"skip": "bogus"}, nothing,
     "unknown --skip stage bogus; allowed: train, quantize, predictions, per-class, t-test, "
     "pies, pie-tfrecords, subgroups, corruptions, robustness, noise-floor, noise-similarity, "
     "informative-features, cost, toy, report"),
    # --- more unreadable model files, and every stage that opens one
    ("model-zip-not-keras", PREDICT, {}, zip_not_keras,
     "manifest member dense_0_seed0: " + ZIP_NOT_KERAS),
    ("model-zip-not-keras", QUANTIZE, {"modes": "float16"}, zip_not_keras,
     "manifest member dense_0_seed0: " + ZIP_NOT_KERAS),
    ("model-missing", COST, {"repeats": 1, "warmup": 0}, remove(f"{DENSE0}/model.keras"),
     f"manifest member dense_0_seed0: model file missing at {{W}}/{DENSE0}/model.keras"),
    ("model-is-a-folder", PREDICT, {}, folder_for_model,
     f"manifest member dense_0_seed0: model file {{W}}/{DENSE0}/model.keras is not a regular "
     "file (links are not followed)"),
    ("keras-hdf5-lambda", CORRUPTIONS, CORRUPTIONS_OPTIONS, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("keras-hdf5-lambda", NOISE, NOISE_OPTIONS, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("keras-hdf5-lambda", FEATURES, FEATURES_OPTIONS, hdf5_lambda_model,
     "manifest member dense_0_seed0: " + NOT_ZIP),
    ("keras-hdf5-lambda", TRAIN, {"init_from": f"{{W}}/{DENSE0}/model.keras", "seeds": 1,
                                  "dataset": "digits"}, hdf5_lambda_model, NOT_ZIP),
    ("keras-hdf5-lambda", IMPORT, {"models": f"{{W}}/{DENSE0}/model.keras",
                                   "method": "imported"}, hdf5_lambda_model, NOT_ZIP),
    # --- dataset.json of the wrong shape, in every stage that loads the data
    ("dataset-json-shape", CORRUPTIONS, CORRUPTIONS_OPTIONS, write_file("dataset.json", "[1, 2]"),
     "{W}/dataset.json must be a JSON object with at least a 'dataset' name"),
    ("dataset-json-shape", NOISE, NOISE_OPTIONS, write_file("dataset.json", "[1, 2]"),
     "{W}/dataset.json must be a JSON object with at least a 'dataset' name"),
    ("dataset-json-shape", FEATURES, FEATURES_OPTIONS, write_file("dataset.json", "[1, 2]"),
     "{W}/dataset.json must be a JSON object with at least a 'dataset' name"),
    ("dataset-json-shape", QUANTIZE, {"modes": "float16"}, write_file("dataset.json", "[1, 2]"),
     "{W}/dataset.json must be a JSON object with at least a 'dataset' name"),
    # --- corrupt TFRecords (the eval data the workdir's dataset.json names)
    ("tfrecord-not-a-tfrecord", PREDICT, {"force": True}, tfrecord_data(garbage),
     "corrupt TFRecord file '{P}/data/validation-00000-of-00001': corrupted record at 0 "
     "(Is this even a TFRecord file?)"),
    ("tfrecord-cut-in-a-header", PREDICT, {"force": True},
     tfrecord_data(cut_bytes(lambda size: size // 2 + 7)),
     r"^corrupt TFRecord file '{P}/data/validation-00000-of-00001': 7 bytes after its "
     r"20 whole records \(a truncated copy\?\)$"),
    ("tfrecord-cut-between-records", PREDICT, {"force": True},
     tfrecord_data(cut_bytes(lambda size: size // 2)),
     "'{P}/data' holds 20 records, its dataset_info.json says 40: a shard is truncated "
     "or missing"),
    ("tfrecord-image-corrupt", PREDICT, {"force": True}, tfrecord_data(bad_image),
     "record 7 of '{P}/data/validation-00000-of-00001': image/encoded does not decode: "
     "Invalid PNG. Failed to initialize decoder."),
    # --- more hand-broken and truncated files
    ("sparsity-minus-zero-same-member", METRICS, {},
     edit_manifest("dense_0_seed1", sparsity="-0.0", seed="0"),
     f"{MANIFEST} row 2 (member_id 'dense_0_seed1'): the same member (method dense, "
     "sparsity 0, seed 0) as 'dense_0_seed0'"),
    ("manifest-empty", PREDICT, {}, write_file("population.csv", ""),
     "{W}/population.csv is not a readable CSV: No columns to parse from file"),
    ("manifest-no-members", TSTAT, {},
     write_file("population.csv", ",".join(records.MANIFEST_COLUMNS) + "\n"),
     "{W}/population.csv has no members"),
    ("accuracy-csv-cut", REPORT, {}, robustness_tables(cut("robustness/accuracy.csv")),
     r"^{W}/robustness/accuracy.csv changed after robustness_tests.analyze wrote it \(4 "
     r"rows, [0-9]+ bytes; now [0-9]+ bytes\): truncated or edited\? rerun "
     r"robustness_tests.analyze$"),
    ("toy-results-cut", REPORT, {},
     lambda w, m: (toy_results_written(w, m), cut("toy/results.csv")(w, m)),
     r"^{W}/toy/results.csv changed after pie.stages.toy_experiment wrote it \(4 rows, "
     r"[0-9]+ bytes; now [0-9]+ bytes\): truncated or edited\? rerun "
     r"pie.stages.toy_experiment$"),
    ("toy-other-settings", TOY, {"out": "{W}/toy"}, toy_run_of_other_settings,
     "^{W}/toy holds a run with other settings \\(.+\\); use a new --out or the same "
     "settings$"),
    ("groups-csv-duplicate-ids", SUBGROUPS, {"groups_csv": "{W}/groups.csv"},
     write_file("groups.csv", "image_id,colour\n0,red\n0,blue\n"),
     "groups file {W}/groups.csv: image_id 0 appears twice"),
    ("groups-csv-ids-not-integers", SUBGROUPS, {"groups_csv": "{W}/groups.csv"},
     write_file("groups.csv", "image_id,colour\nabc,red\n"),
     "groups file {W}/groups.csv: 'image_id' must hold integers"),
    ("corruption-source-broken", CORRUPTIONS, CORRUPTIONS_OPTIONS,
     write_file("predictions/test/gaussian_noise-1/corruption_source.json", "{"),
     "{W}/predictions/test/gaussian_noise-1/corruption_source.json is not readable JSON: "
     "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("pie-csv-of-other-data", PIE_RECORDS, {}, nothing,  # found while the images stream
     "pie.csv gives image 0 the label 0, the data 7: the table was made from other data"),
    ("models-match-nothing", IMPORT, {"models": "{W}/nothing*.keras", "method": "dense"},
     nothing, "--models={W}/nothing*.keras matches no file"),
    # --- issue 26: the significance options of the tests and the noise floor
    ("min-errors-negative", TSTAT, {"min_errors": -1}, nothing, MIN_ERRORS.format(-1)),
    ("correction-unknown", TSTAT, {"correction": "holm"}, nothing, CORRECTION),
    ("min-errors-negative", SUBGROUPS, {"groups_csv": "{W}/groups.csv", "min_errors": -3},
     write_file("groups.csv", "image_id,colour\n0,red\n"), MIN_ERRORS.format(-3)),
    ("correction-unknown", SUBGROUPS, {"groups_csv": "{W}/groups.csv", "correction": "holm"},
     write_file("groups.csv", "image_id,colour\n0,red\n"), CORRECTION),
    ("min-errors-negative", NOISE_FLOOR, {"min_errors": -1}, nothing, MIN_ERRORS.format(-1)),
    ("correction-unknown", NOISE_FLOOR, {"correction": "holm"}, nothing, CORRECTION),
    ("paired-halves", NOISE_FLOOR, {"test": "paired"}, nothing,
     "test 'paired' is not allowed for the noise floor: use one of ['welch', "
     "'permutation'] (two halves of the dense population hold different seeds, so they "
     "cannot be paired)"),
    # issue 25: a model at chance on the family's input convention stops the run,
    # naming the convention
    ("model-at-chance", TRAIN, {"init_from": f"{{W}}/{DENSE0}/model.keras", "seeds": 1,
                                "dataset": "digits"}, guessing_model,
     rf"^model {{W}}/{DENSE0}/model.keras scores [0-9.]+% top-1 on 256 eval images of "
     r"'digits', chance level [0-9.]+%: the 'small' family gives HxWxC float32 in \[0, 1\] "
     r"\(uint8 / 255\), no mean or std \(docs/contracts.md\); --allow_chance to go on$"),
    ("model-at-chance", IMPORT, {"models": f"{{W}}/{DENSE0}/model.keras", "method": "mine"},
     guessing_model,
     rf"^model {{W}}/{DENSE0}/model.keras scores [0-9.]+% top-1 on 256 eval images of "
     r"'digits', chance level [0-9.]+%: the 'small' family gives HxWxC float32 in \[0, 1\] "
     r"\(uint8 / 255\), no mean or std \(docs/contracts.md\); --allow_chance to go on$"),
    # issue 23: remaining bad inputs
    ("resample-seed-negative", TSTAT, {"resample_seed": -1}, nothing, RESAMPLE_SEED),
    ("resample-seed-negative", SUBGROUPS, {"groups_csv": "{W}/groups.csv", "resample_seed": -1},
     write_file("groups.csv", "image_id,colour\n0,red\n"), RESAMPLE_SEED),
    ("resample-seed-negative", NOISE_FLOOR, {"resample_seed": -1}, nothing, RESAMPLE_SEED),
    ("manifest-seed-huge", METRICS, {}, edit_manifest("dense_0_seed1", seed="1e30"),
     f"{MANIFEST} row 2 (member_id 'dense_0_seed1'): seed 1e+30 is not an integer in "
     "[0, 2147483647]"),
    ("dataset-json-num-classes", PREDICT, {"force": True}, edit_dataset_json(num_classes=12),
     "{W}/dataset.json: 'num_classes' is 12 but 'class_names' lists 10 names"),
    ("dataset-json-num-classes", PREDICT, {"force": True},
     edit_dataset_json(num_classes=12, class_names=[f"c{k}" for k in range(12)]),
     "{W}/dataset.json: 'num_classes' is 12 but {W}/classes.json lists 10 classes"),
    ("dataset-json-num-classes-vs-data", PREDICT, {"force": True},
     lambda w, m: (edit_dataset_json(num_classes=12, class_names=[
         f"c{k}" for k in range(12)])(w, m),
         write_file("classes.json", str([f"c{k}" for k in range(12)]).replace("'", '"'))(w, m)),
     "{W}/dataset.json: 'num_classes' is 12 but the data 'digits' has 10"),
    ("dataset-json-family", PREDICT, {"force": True}, edit_dataset_json(family="imagenet"),
     "{W}/dataset.json: 'family' is 'imagenet' but the data 'digits' has 'small'"),
    ("dataset-json-duplicate-names", PREDICT, {"force": True},
     edit_dataset_json(class_names=["a"] * N_CLASSES),
     "{W}/dataset.json lists the class name 'a' twice: class names must be unique"),
    ("classes-json-duplicate-names", TSTAT, {},
     write_file("classes.json", '["a", "b", "a", "c", "d", "e", "f", "g", "h", "i"]'),
     "{W}/classes.json lists the class name 'a' twice: class names must be unique"),
    ("member-input-shape", PREDICT, {}, other_input_model(two_inputs=False),
     f"manifest member dense_0_seed0: model {{W}}/{DENSE0}/model.keras takes inputs of "
     "shape 4x4x1, the data's images are 8x8x1"),
    ("member-input-shape", FEATURES, FEATURES_OPTIONS, other_input_model(two_inputs=False),
     f"manifest member dense_0_seed0: model {{W}}/{DENSE0}/model.keras takes inputs of "
     "shape 4x4x1, the data's images are 8x8x1"),
    ("member-two-inputs", PREDICT, {}, other_input_model(two_inputs=True),
     f"manifest member dense_0_seed0: model {{W}}/{DENSE0}/model.keras has 2 inputs: a "
     "member takes one input, the image"),
    ("member-two-inputs", FEATURES, FEATURES_OPTIONS, other_input_model(two_inputs=True),
     f"manifest member dense_0_seed0: model {{W}}/{DENSE0}/model.keras has 2 inputs: a "
     "member takes one input, the image"),
    # pie study checks every later stage's flags before it runs any stage
    ("study-noise-draws-zero", STUDY, {"noise_draws": 0}, nothing,
     "--noise_draws must be at least 1, got 0"),
    ("study-cost-repeats-negative", STUDY, {"cost_repeats": -1}, nothing,
     "--cost_repeats must be at least 1, got -1"),
    ("study-cost-warmup-negative", STUDY, {"cost_warmup": -1}, nothing,
     "--cost_warmup must be at least 0, got -1"),
    ("study-severities-nine", STUDY, {"severities": "9"}, nothing, SEVERITY_NINE),
    ("study-stage-jobs-negative", STUDY, {"stage_jobs": -1}, nothing,
     "--stage_jobs must be at least 0 (0: one per core), got -1"),
]


@pytest.mark.parametrize("case, stage, options, breaker, expected", CASES,
                         ids=[f"{stage.split('.')[-1]}:{case}" for case, stage, *_ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(base, tiny_models, tmp_path, case, stage,
                                                   options, breaker, expected):
    workdir, options, before = _broken_copy(base, tiny_models, tmp_path, breaker, options)
    with pytest.raises(errors.InputError) as raised:
        _stage(stage)(workdir, **options)
    _assert_message(str(raised.value), expected, workdir, str(tmp_path))
    assert snapshot(str(tmp_path)) == before


def _broken_copy(base, models, tmp_path, breaker, options):
    """W (a copy of base, broken), the options with {W} filled in, and what tmp_path holds."""
    workdir = str(tmp_path / "w")
    shutil.copytree(base, workdir, symlinks=True)
    breaker(workdir, str(models))
    options = {key: value.format(W=workdir) if isinstance(value, str) else value
               for key, value in options.items()}
    return workdir, options, snapshot(str(tmp_path))


def _assert_message(message, expected, workdir, folder):
    assert "\n" not in message
    if expected.startswith("^"):
        import re
        assert re.match(expected.replace("{W}", re.escape(workdir)).replace(
            "{P}", re.escape(folder)), message), message
    else:
        assert message == expected.format(W=workdir, P=folder)


# Cases run as commands too: the in-process InputError is what `cli.run` turns into one
# `error:` line and exit 2 (a crash of the process, a signal, would show only here).
AS_COMMANDS = ["predictions:tflite-truncated", "predictions:tfrecord-image-corrupt",
               "toy_experiment:batch-size-zero", "gen_tstatistic:duplicate-member-id",
               "gen_tstatistic:min-errors-negative", "noise_floor:correction-unknown"]


def _command_line(stage, options):
    """The command-line arguments of a stage's keyword options (as call_stage reads them)."""
    import importlib
    from absl import flags
    from pie.io import cli
    module = importlib.import_module(stage)
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    return [cli._argument(flag_values, stage, name, value) for name, value in options.items()]


@pytest.mark.parametrize("name", AS_COMMANDS)
def test_bad_input_command_exits_2_with_one_line(base, tiny_models, tmp_path, name):
    from conftest import error_lines, run_stage
    case, stage, options, breaker, expected = next(
        row for row in CASES if f"{row[1].split('.')[-1]}:{row[0]}" == name)
    workdir, options, before = _broken_copy(base, tiny_models, tmp_path, breaker, options)
    if stage not in NO_WORKDIR:
        options = dict(workdir=workdir, **options)
    result = run_stage(stage, *_command_line(stage, options), check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    _assert_message(lines[0][len("error: "):], expected, workdir, str(tmp_path))
    assert snapshot(str(tmp_path)) == before


def test_study_on_a_dangling_link_is_one_line(tmp_path):
    """issue 23: a --workdir that is a link to nothing is one error line before any
    stage runs (nothing is created where the link points)."""
    from pie.stages import study
    workdir, nowhere = tmp_path / "w", tmp_path / "nowhere"
    os.symlink(nowhere, workdir)
    with pytest.raises(errors.InputError) as raised:
        study.run(workdir=str(workdir), dataset="digits", seeds=1)
    assert str(raised.value) == (f"--workdir={workdir} is a symbolic link to {nowhere}, "
                                 "which does not exist")
    assert os.listdir(tmp_path) == ["w"]


# ------------------------------------------------------------------ the report


def test_report_embeds_only_png_files_the_toy_study_could_have_written(tmp_path):
    """A file renamed .png and a link to a PNG outside W never reach index.html."""
    import base64
    from test_report import make_workdir
    from pie.report import build
    workdir = make_workdir(str(tmp_path / "w"))
    secret = b"password: hunter2\n" * 20
    (tmp_path / "w" / "toy" / "notes.png").write_bytes(secret)
    from PIL import Image
    Image.new("RGB", (31, 17), (1, 2, 3)).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", tmp_path / "w" / "toy" / "linked.png")
    build.build_report(workdir, fmt="html", log=lambda message: None)
    with open(os.path.join(workdir, "report", "index.html")) as handle:
        page = handle.read()
    for content in (secret, (tmp_path / "outside.png").read_bytes()):
        assert base64.b64encode(content).decode("ascii")[:60] not in page
    with open(os.path.join(workdir, "toy", "boundaries_moons.png"), "rb") as handle:
        assert base64.b64encode(handle.read()).decode("ascii") in page
    assert "toy/notes.png is not a PNG file of the toy study: left out" in page
    assert "linked.png" not in page


def test_names_from_data_are_drawn_as_text_not_mathtext(tmp_path):
    """A class named like TeX (`$\\x$`) would make matplotlib's mathtext parser fail."""
    from pie.report import plots
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots()
    axis.bar([0, 1], [1, 2])
    axis.set_xticks([0, 1], ["$\\x$", "a_$b"])
    axis.set_title("$\\notacommand{$")
    png = plots.to_png(figure)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_report_draws_class_and_group_names_that_look_like_tex(base, tmp_path):
    """Names from the data (`$\\x$`) that matplotlib's mathtext cannot parse are drawn as
    text: the analysis stages and the report finish, and the page shows them."""
    from per_class_accuracy import gen_tstatistic, subgroups
    from pie.report import build
    workdir = str(tmp_path / "w")
    shutil.copytree(base, workdir, symlinks=True)
    names = [f"$\\x{k}$" for k in range(N_CLASSES - 1)] + ["a_$b"]
    records.write_json(Workdir(workdir).classes, names)
    config = records.read_json(Workdir(workdir).dataset_config)
    records.write_json(Workdir(workdir).dataset_config, dict(config, class_names=names))
    write_file("groups.csv", "image_id,$\\notacommand{$\n" + "".join(
        f"{k},{'$x^$' if k % 2 else '_{b'}\n" for k in range(N_IMAGES)))(workdir, None)
    gen_tstatistic.run(workdir)
    subgroups.run(workdir, groups_csv=os.path.join(workdir, "groups.csv"))
    html = build.build_report(workdir, fmt="html", log=lambda message: None)
    with open(html) as handle:
        page = handle.read()
    assert "$\\x3$" in page and "$\\notacommand{$" in page
