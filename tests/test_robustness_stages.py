"""End-to-end tests of the robustness stages on the tiny digits population.

Processes for what a user runs (corruptions, its rerun, analyze, bad input);
noise similarity and informative features run in-process (their model work is
the same, without a second TensorFlow start-up).
"""
import glob
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import error_lines, run_stage
from per_class_accuracy import gen_tstatistic
from pie.analysis import robustness
from pie.io import records
from pie_dataset_gen import aggregate_predictions
from pie.io.workdir import Workdir
from robustness_tests import analyze, informative_features, noise_similarity
from robustness_tests import corruptions as corruption_stage

CORRUPTIONS = ("gaussian_noise", "contrast")
SHIFTED = tuple(f"{name}/3" for name in CORRUPTIONS)


@pytest.fixture(scope="module")
def workdir(tiny_population, tmp_path_factory):
    """The tiny population with clean and corrupted predictions (2 corruptions x 1)."""
    workdir = str(tmp_path_factory.mktemp("robustness") / "w")
    shutil.copytree(tiny_population, workdir)
    run_stage("pie_dataset_gen.predictions", f"--workdir={workdir}")
    result = run_stage("robustness_tests.corruptions", f"--workdir={workdir}",
                       f"--corruptions={','.join(CORRUPTIONS)}", "--severities=3")
    assert "2 corrupted sets x 4 members, 0 sets done, 2 to run" in result.stdout
    assert "gaussian_noise/3: 4 members" in result.stderr  # a progress line
    return workdir


def read(workdir, member_id, distribution):
    return pd.read_parquet(Workdir(workdir).predictions_path(member_id, distribution))


def test_corrupted_predictions_schema_and_rerun_skips(workdir):
    manifest = records.read_manifest(workdir)
    for distribution in SHIFTED:
        folder = Workdir(workdir).predictions_dir(distribution)
        assert os.path.basename(folder) == distribution.replace("/", "-")
        for member_id in manifest["member_id"]:
            frame, clean = read(workdir, member_id, distribution), read(workdir, member_id,
                                                                        "clean")
            assert list(frame.columns) == list(clean.columns) + ["distribution"]
            assert (frame["distribution"] == distribution).all()
            assert frame["image_id"].tolist() == clean["image_id"].tolist()
            assert frame["label"].tolist() == clean["label"].tolist()
        assert records.read_json(Workdir(workdir).corruption_source(distribution)) == {
            "source": "pie.shift.corruptions", "seed": 0, "scale": "auto", "resolved_scale": "cifar"}
    # Corruption changes predictions: contrast at 0.4 of the 8-px digits is no identity.
    member_id = manifest["member_id"].iloc[0]
    assert not np.allclose(read(workdir, member_id, "contrast/3")["prob_predicted"],
                           read(workdir, member_id, "clean")["prob_predicted"])
    files = glob.glob(os.path.join(workdir, "predictions", "test", "*-3", "*.parquet"))
    assert len(files) == 2 * len(manifest)
    stamps = {path: os.stat(path).st_mtime_ns for path in files}
    rerun = run_stage("robustness_tests.corruptions", f"--workdir={workdir}",
                      f"--corruptions={','.join(CORRUPTIONS)}", "--severities=3")
    assert "2 sets done, 0 to run" in rerun.stdout
    assert {path: os.stat(path).st_mtime_ns for path in files} == stamps
    # Another seed asks for other predictions: refused before anything is skipped.
    other = run_stage("robustness_tests.corruptions", f"--workdir={workdir}",
                      "--corruptions=contrast", "--severities=3", "--seed=1", check=False)
    assert other.returncode == 2
    assert error_lines(other) == [
        f"error: {Workdir(workdir).predictions_dir('contrast/3')} holds predictions made "
        "with source=pie.shift.corruptions, seed=0, scale=auto, not source=pie.shift.corruptions, "
        "seed=1, scale=auto: pass --force to replace them"]
    assert {path: os.stat(path).st_mtime_ns for path in files} == stamps


def test_analyze_writes_every_table(workdir):
    result = run_stage("robustness_tests.analyze", f"--workdir={workdir}")
    assert "4 distributions (2 corruptions)" in result.stdout
    wd = Workdir(workdir)
    accuracy = pd.read_csv(wd.file("robustness_accuracy"))
    excess = pd.read_csv(wd.file("excess_error"))
    per_seed = pd.read_csv(wd.file("excess_error_per_seed"))
    potential = pd.read_csv(wd.file("prune_potential"))
    assert list(accuracy.columns) == robustness.ACCURACY_COLUMNS
    assert list(excess.columns) == robustness.EXCESS_ERROR_COLUMNS
    assert list(per_seed.columns) == robustness.EXCESS_ERROR_SEED_COLUMNS
    assert list(potential.columns) == robustness.PRUNE_POTENTIAL_COLUMNS
    # top-1 straight from one file
    member_id = "magnitude_0.5_seed1"
    frame = read(workdir, member_id, "gaussian_noise/3")
    row = accuracy[(accuracy["member_id"] == member_id)
                   & (accuracy["distribution"] == "gaussian_noise/3")]
    assert row["top1"].item() == pytest.approx((frame["predicted"] == frame["label"]).mean())
    everything = {"clean", *SHIFTED, robustness.MEAN_CORRUPTION}
    assert set(accuracy["distribution"]) == everything
    assert set(potential["distribution"]) == everything
    assert set(excess["distribution"]) == everything - {"clean"}
    assert (excess["n_paired"] == 2).all() and (potential["method"] == "magnitude").all()
    assert os.path.exists(os.path.join(workdir, "robustness", "analyze.flags.txt"))
    rerun = run_stage("robustness_tests.analyze", f"--workdir={workdir}")
    assert "up to date" in rerun.stdout


def test_per_class_and_pie_stages_run_on_a_corrupted_distribution(workdir):
    assert gen_tstatistic.run(workdir, "contrast/3")
    assert aggregate_predictions.run(workdir, "contrast/3")
    for stage, name in (("per_class", "tstatistic.csv"), ("pie", "pie.csv")):
        path = os.path.join(Workdir(workdir).folder(stage, "contrast/3"), name)
        assert path == os.path.join(workdir, stage, "contrast-3", name)
        assert not pd.read_csv(path).empty


def test_noise_similarity_at_eps_0_is_the_clean_agreement(workdir):
    assert noise_similarity.run(workdir, [0.0, 0.5], draws=2, images=10000, seed=0,
                                batch_size=128)
    summary = pd.read_csv(Workdir(workdir).file("noise_similarity"))
    per_pair = pd.read_csv(Workdir(workdir).file("noise_similarity_per_pair"))
    assert list(summary.columns) == noise_similarity.SUMMARY_COLUMNS
    assert set(summary["method"]) == {"magnitude", robustness.DENSE_REFERENCE}
    clean = per_pair[per_pair["eps"] == 0]
    for pair in clean.itertuples():
        expected = (read(workdir, pair.member_id, "clean")["predicted"]
                    == read(workdir, pair.reference_id, "clean")["predicted"]).mean()
        assert pair.agreement == pytest.approx(expected)
        assert pair.draws == 1 and pair.images == 360
    noisy = summary[summary["eps"] == 0.5]
    assert (noisy["draws"] == 2).all() and (noisy["n_pairs"] > 0).all()
    assert not noise_similarity.run(workdir, [0.0, 0.5], draws=2, images=10000, seed=0)


def test_informative_features_tables(workdir):
    assert informative_features.run(workdir, images=40, fraction=0.1, seed=0)
    summary = pd.read_csv(Workdir(workdir).file("informative_features"))
    per_image = pd.read_csv(Workdir(workdir).file("informative_features_per_image"))
    assert list(summary.columns) == informative_features.SUMMARY_COLUMNS
    assert list(per_image.columns) == informative_features.PER_IMAGE_COLUMNS
    assert set(summary["method"]) == {"magnitude", robustness.DENSE_REFERENCE}
    assert summary["iou_mean"].between(0, 1).all() and (summary["images"] == 40).all()
    assert per_image.groupby("member_id")["image_id"].nunique().eq(40).all()
    # confidences are of each model's own predicted class (not the true label)
    from pie.models import predict
    x, _, ids = noise_similarity.eval_subset(workdir, 40, 0)
    manifest = records.read_manifest(workdir).set_index("member_id")
    for member_id, rows in per_image.groupby("member_id"):
        logits = predict.load_member(workdir, manifest.loc[member_id].to_dict() | {
            "member_id": member_id}).logits(x, 128)
        assert rows["image_id"].tolist() == list(ids)
        assert rows["predicted"].tolist() == logits.argmax(axis=1).tolist()
    assert per_image["has_sis"].all() and (summary["no_sis"] == 0).all()
    assert (per_image["features_kept"] == 7).all()  # ceil(0.1 x 64) input elements


@pytest.mark.parametrize("flags,message", [
    (["--corruptions=blurry"], "error: --corruptions: unknown corruption 'blurry'; allowed: "),
    (["--severities=0"], "error: --severities: severity must be an integer in 1..5, got 0"),
    (["--severities=6"], "error: --severities: severity must be an integer in 1..5, got 6"),
    (["--workers=-1"], "error: --workers must be an integer >= 0 (0 = every core), got -1"),
])
def test_corruptions_bad_input_exits_2_with_one_line(tmp_path, flags, message):
    result = run_stage("robustness_tests.corruptions", f"--workdir={tmp_path}", *flags,
                       check=False)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert os.listdir(tmp_path) == []


def test_severities_all_is_the_five():
    assert corruption_stage.parse_severities("all") == [1, 2, 3, 4, 5]
    assert corruption_stage.parse_severities("3,1,3") == [1, 3]


def test_grey_images_skip_saturate_and_each_severity_gets_its_mean(workdir, tmp_path, capsys):
    copy = str(tmp_path / "w")
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("robustness"))
    # digits are grey: saturate would be the identity, so it is not run.
    assert corruption_stage.run_synthetic(copy, ["saturate", "contrast"], [1], workers=1) == 1
    out = capsys.readouterr().out
    assert ("corruptions: skipping saturate: the identity on 1-channel images (not run, not "
            "in mean_corruption)") in out
    assert "1 corrupted sets x 4 members, 0 sets done, 1 to run" in out
    assert not os.path.exists(Workdir(copy).predictions_dir("saturate/1"))
    assert analyze.run(copy)
    accuracy = pd.read_csv(Workdir(copy).file("robustness_accuracy"))
    assert {"contrast/1", "mean_severity_1", "mean_severity_3"} <= set(accuracy["distribution"])
    for member_id, rows in accuracy.groupby("member_id"):
        top1 = rows.set_index("distribution")["top1"]
        assert top1["mean_severity_3"] == pytest.approx(
            (top1["gaussian_noise/3"] + top1["contrast/3"]) / 2)
        assert top1["mean_severity_1"] == pytest.approx(top1["contrast/1"])
        assert top1[robustness.MEAN_CORRUPTION] == pytest.approx(
            (top1["gaussian_noise/3"] + top1["contrast/3"] + top1["contrast/1"]) / 3)


def test_corruptions_refuse_toy_populations(tmp_path):
    records.write_json(os.path.join(tmp_path, "dataset.json"),
                       {"dataset": "moons", "family": "toy", "num_classes": 2})
    with pytest.raises(ValueError, match="^corruptions need images: the population was "
                                         "trained on the 2-D toy set 'moons'$"):
        corruption_stage.run_synthetic(str(tmp_path), ["fog"], [1])


def test_analyze_fails_without_clean_predictions_or_dense(workdir, tmp_path):
    copy = str(tmp_path / "w")
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints", "robustness"))
    shutil.rmtree(Workdir(copy).predictions_dir("clean"))
    with pytest.raises(records.ContractError, match="no clean predictions"):
        analyze.run(copy)
    manifest = records.read_manifest(copy)
    manifest = manifest[manifest["method"] != "dense"]
    records.write_csv(Workdir(copy).manifest, manifest)
    with pytest.raises(records.ContractError, match="no dense population"):
        analyze.run(copy)
