"""The methods people ship (issue 28): m_by_n, qat, pqat, cluster and distill, each
trained as a tiny population beside one dense and one magnitude-pruned parent, and
checked for what makes it that method on the saved members; then the analysis
stages take them like any population."""
import numpy as np
import pandas as pd
import pytest

import pie  # noqa: F401
from pie.io import records
from pie.io.workdir import Workdir

# The recipe of conftest's tiny population (its parents), one seed of new members.
RECIPE = dict(dataset="digits", model="small_cnn", width=4, seeds=1, epochs=1,
              finetune_epochs=1, learning_rate=0.01)


@pytest.fixture(scope="module")
def population(tiny_population, tmp_path_factory):
    """A copy of the tiny population (dense and magnitude 0.5 parents), and one member
    of each new method."""
    import shutil
    from save_checkpoint import train
    workdir = str(tmp_path_factory.mktemp("methods") / "w")
    shutil.copytree(tiny_population, workdir)
    train.run(workdir=workdir, sparsities=[0.5], method="m_by_n", **RECIPE)
    train.run(workdir=workdir, sparsities=[0], method="qat", **RECIPE)
    train.run(workdir=workdir, sparsities=[0.5], method="pqat", **RECIPE)
    train.run(workdir=workdir, sparsities=[0], method="cluster", clusters=8, **RECIPE)
    train.run(workdir=workdir, sparsities=[0], method="distill", student_width=2,
              temperature=2.0, alpha=0.3, **RECIPE)
    return workdir


def _row(workdir, member_id):
    manifest = records.read_manifest(workdir)
    rows = manifest[manifest["member_id"] == member_id]
    assert len(rows) == 1, member_id
    return rows.iloc[0]


def _keras(workdir, member_id, key="keras_model"):
    from pie.models import loading
    row = _row(workdir, member_id)
    return loading.load_keras(Workdir(workdir).member_file(row["path"], key))


def _tflite_tensors(path):
    """{name: (dtype, array)} of the constant tensors of a .tflite file."""
    from pie.models import loading
    interpreter = loading.load_tflite(path, delegates=False)
    interpreter.allocate_tensors()
    tensors = []
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue  # activations: not readable before a run
        tensors.append((detail["name"], value))
    return tensors


def _groups_of_four_along_inputs(kernel):
    """Rows of 4 consecutive input-channel weights: conv [h, w, in, out], dense [in, out]."""
    inputs_last = np.moveaxis(kernel, -2, -1)  # [..., out, in]
    rows = inputs_last.reshape(-1, kernel.shape[-2])
    rows = np.pad(rows, ((0, 0), (0, (-rows.shape[1]) % 4)))
    return rows.reshape(-1, 4)


def test_m_by_n_members_hold_two_zeros_in_every_four_inputs_saved_and_in_tflite(population):
    from pie.compress import pruning, quantize
    row = _row(population, "m_by_n_0.5_seed0")
    assert row["sparsity"] == 0.5 and row["parent_id"] == "dense_0_seed0"
    model = _keras(population, "m_by_n_0.5_seed0")
    names = pruning.prunable_layer_names(model)
    assert names == ["conv1", "conv2", "dense1"]
    # conv2 (4 inputs) and dense1 take whole groups; conv1's single input channel is
    # one padded group per filter position.
    for name in names:
        groups = _groups_of_four_along_inputs(model.get_layer(name).kernel.numpy())
        assert (np.count_nonzero(groups == 0, axis=1) >= 2).all(), name
    dense1 = model.get_layer("dense1").kernel.numpy()
    assert np.isclose(np.mean(dense1 == 0), 0.5, atol=0.01)
    # The dense parent has no such pattern: the method made it.
    parent = _keras(population, "dense_0_seed0").get_layer("dense1").kernel.numpy()
    assert not (np.count_nonzero(_groups_of_four_along_inputs(parent) == 0, axis=1) >= 2).all()
    # TFLite stores a kernel with its inputs last ([out, h, w, in], [out, in]).
    path = population + "/m_by_n.tflite"
    with open(path, "wb") as handle:
        handle.write(quantize.convert(model, quantize.FLOAT_MODE))
    checked = 0
    for _, value in _tflite_tensors(path):
        if value.ndim in (2, 4) and value.size == dense1.size and value.shape[-1] == \
                dense1.shape[0]:
            groups = value.reshape(-1, value.shape[-1])
            groups = np.pad(groups, ((0, 0), (0, (-groups.shape[1]) % 4))).reshape(-1, 4)
            assert (np.count_nonzero(groups == 0, axis=1) >= 2).all()
            checked += 1
    assert checked == 1


def test_qat_members_are_int8_tflite_with_the_keras_model_beside(population):
    row = _row(population, "qat_0_seed0")
    assert row["sparsity"] == 0 and row["parent_id"] == "dense_0_seed0"
    assert row["model_file"].endswith("model.tflite")
    wd = Workdir(population)
    assert (wd.member_file(row["path"], "keras_model")).endswith("model.keras")
    import os
    assert os.path.getsize(wd.member_file(row["path"], "keras_model")) > 0
    int8_weights = [name for name, value in _tflite_tensors(wd.path(row["model_file"]))
                    if value.dtype == np.int8 and value.ndim in (2, 4)]
    assert len(int8_weights) >= 4  # conv1, conv2, dense1 and the classifier
    assert 0.5 < row["top1"] <= 1  # digits: well above chance (0.1) after QAT


def test_pqat_keeps_the_zeros_of_its_pruned_parent_in_the_int8_tflite(population):
    row = _row(population, "pqat_0.5_seed0")
    assert row["sparsity"] == 0.5 and row["parent_id"] == "magnitude_0.5_seed0"
    parent = _keras(population, "magnitude_0.5_seed0")
    tensors = [value for _, value in _tflite_tensors(Workdir(population).path(row["model_file"]))
               if value.dtype == np.int8 and value.ndim in (2, 4)]
    for name in ("conv2", "dense1"):
        kernel = parent.get_layer(name).kernel.numpy()
        zeros = np.moveaxis(kernel == 0, -1, 0)  # TFLite order: [out, ..., in]
        assert zeros.mean() > 0.3
        matches = [value for value in tensors if value.shape == zeros.shape]
        assert len(matches) == 1, name
        assert (matches[0][zeros] == 0).all(), name
    assert np.isclose(row["measured_sparsity"], 0.5, atol=0.05)


def test_clustered_kernels_hold_at_most_k_values(population):
    row = _row(population, "cluster_0_seed0")
    assert row["parent_id"] == "dense_0_seed0" and row["model_file"].endswith(".keras")
    model = _keras(population, "cluster_0_seed0")
    parent = _keras(population, "dense_0_seed0")
    for name in ("conv1", "conv2", "dense1"):
        assert np.unique(model.get_layer(name).kernel.numpy()).size <= 8, name
        assert np.unique(parent.get_layer(name).kernel.numpy()).size > 8, name
    meta = records.read_json(Workdir(population).member_file(row["path"], "meta"))
    assert meta["clusters"] == 8


def test_distilled_student_is_smaller_and_records_its_teacher(population):
    row = _row(population, "distill_0_seed0")
    assert row["parent_id"] == "dense_0_seed0"
    student = _keras(population, "distill_0_seed0")
    teacher = _keras(population, "dense_0_seed0")
    assert student.count_params() < teacher.count_params()
    assert student.get_layer("conv1").kernel.shape[-1] == 2
    meta = records.read_json(Workdir(population).member_file(row["path"], "meta"))
    assert meta["teacher_id"] == "dense_0_seed0" and meta["temperature"] == 2.0


def test_the_default_student_is_half_the_teachers_width():
    """Half of --width, else half of the model's own default width (64 for the
    ResNet-18 and -50, 10 for WRN-28-k), whichever model it is; a model without a
    width needs --student_width."""
    from pie.compress import methods_distill
    from pie.compress.config import TrainConfig
    from pie.io import errors
    from pie.models import builders

    def student(**changes):
        return methods_distill.student_width(TrainConfig(workdir="unused", method="distill",
                                                         sparsities="0", **changes))
    built = {name: builders.build(name, (32, 32, 3), 4) for name in ("small_cnn", "resnet18")}
    assert built["small_cnn"].get_layer("conv1").filters == 2 * student(model="small_cnn")
    assert built["resnet18"].get_layer("stem_conv").filters == 2 * student(model="resnet18")
    assert [student(model=name) for name in ("small_cnn", "resnet18", "resnet50", "wrn28_k")] \
        == [8, 32, 32, 5]
    assert student(model="resnet50", width=8) == 4
    assert student(model="small_cnn", student_width=3) == 3
    with pytest.raises(errors.UsageError, match="^--method=distill: resnet50_keras has no "
                                                "width to halve; give --student_width$"):
        student(model="resnet50_keras")


def test_distillation_loss_is_alpha_hard_plus_t_squared_kl():
    from scipy.special import log_softmax, softmax
    from pie.compress import methods_distill
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 3
    labels = np.array([0, 1, 2, 3, 1])
    temperature, alpha = 3.0, 0.25
    hard = -log_softmax(student, axis=1)[np.arange(5), labels]
    p = softmax(teacher / temperature, axis=1)
    kl = np.sum(p * (np.log(p) - log_softmax(student / temperature, axis=1)), axis=1)
    expected = alpha * hard + (1 - alpha) * temperature ** 2 * kl
    got = methods_distill.distillation_loss(labels, student.astype(np.float32),
                                            teacher.astype(np.float32), temperature, alpha)
    assert np.allclose(got.numpy(), expected, rtol=1e-4)


def test_new_populations_go_through_predictions_ttest_and_pies(population):
    from per_class_accuracy import gen_tstatistic
    from pie_dataset_gen import aggregate_predictions, predictions
    predictions.run(workdir=population)
    gen_tstatistic.run(population)
    aggregate_predictions.run(population)
    wd = Workdir(population)
    summary = pd.read_csv(wd.file("tstatistic_summary"))
    variants = set(zip(summary["method"], summary["sparsity"]))
    for variant in [("m_by_n", 0.5), ("qat", 0.0), ("pqat", 0.5), ("cluster", 0.0),
                    ("distill", 0.0)]:
        assert variant in variants
    pies = pd.read_csv(wd.file("pie_summary"))
    assert {"m_by_n", "qat", "pqat", "cluster", "distill"} <= set(pies["method"])


def _study(*args):
    from absl import flags
    from pie.io import cli
    from pie.stages import study
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", "--workdir=W", *args])
    return cli.settings_of(values, "pie.stages.study")


def test_the_embedded_study_trains_one_population_of_m_by_n_qat_and_distill():
    from pie.io import errors as pie_errors
    from pie.stages import study
    values = _study()
    study.validate(values)
    runs = {method: study.extra_train_args(values, method)
            for method in study.extra_methods(values)}
    assert list(runs) == ["m_by_n", "qat", "distill"]
    assert runs["m_by_n"][-2:] == ["--method=m_by_n", "--sparsities=0.5"]
    assert runs["qat"][-2:] == ["--method=qat", "--sparsities=0"]
    # The same seeds and recipe as the main population.
    assert all("--seeds=6" in args and "--epochs=8" in args for args in runs.values())
    # pqat quantizes the study's own pruned levels of its --method; 3:4 gives 0.75.
    values = _study("--extra_methods=pqat,m_by_n", "--method=wt", "--m_by_n=3,4")
    assert study.extra_train_args(values, "pqat")[-3:] == [
        "--method=pqat", "--sparsities=0.5,0.8,0.95", "--parent_method=wt"]
    assert study.extra_train_args(values, "m_by_n")[-2:] == ["--method=m_by_n",
                                                             "--sparsities=0.75"]
    assert study.extra_methods(_study("--extra_methods=none")) == []
    with pytest.raises(pie_errors.UsageError, match="^--extra_methods takes methods made "
                       "from the study's members .*, got 'sipp'$"):
        study.validate(_study("--extra_methods=sipp"))
    with pytest.raises(pie_errors.UsageError, match="^--clusters must be at least 2, got 1$"):
        study.validate(_study("--extra_methods=cluster", "--clusters=1"))
