"""Tests of pie.analysis.stage_io: stage arguments, class names and range, freshness stamps."""
import os

import numpy as np
import pandas as pd
import pytest

from pie.analysis import stage_io
from pie.io import records
from pie.io.workdir import Workdir, stamp_in


def manifest_row(member_id, method="dense", sparsity=0.0, dataset="toy", seed=0):
    return {"member_id": member_id, "method": method, "sparsity": sparsity,
            "measured_sparsity": sparsity, "seed": seed, "dataset": dataset, "model": "mlp",
            "top1": 0.5, "path": member_id, "model_file": f"{member_id}/model.keras"}


def write_member(workdir, member_id, labels, predicted):
    n = len(labels)
    records.write_predictions(Workdir(workdir).predictions_path(member_id), pd.DataFrame({
        "member_id": member_id, "image_id": np.arange(n), "label": labels,
        "predicted": predicted, "prob_predicted": np.full(n, 0.5),
        "prob_label": np.full(n, 0.25)}))


class TestValidateStageArgs:

    def test_accepts_clean_and_shifted(self, tmp_path):
        stage_io.validate_stage_args(str(tmp_path), "clean", "test")
        stage_io.validate_stage_args(str(tmp_path), "gaussian_noise/3", "test")

    def test_missing_workdir(self):
        with pytest.raises(ValueError, match="--workdir is required"):
            stage_io.validate_stage_args(None, "clean", "test")

    def test_workdir_not_a_folder(self, tmp_path):
        with pytest.raises(ValueError, match="is not a folder"):
            stage_io.validate_stage_args(str(tmp_path / "nope"), "clean", "test")

    @pytest.mark.parametrize("distribution", ["fog/x", "gaussian_noise-3", "../x/1"])
    def test_bad_distribution(self, tmp_path, distribution):
        with pytest.raises(ValueError, match="use 'clean', '<corruption>/<severity>'"):
            stage_io.validate_stage_args(str(tmp_path), distribution, "test")

    @pytest.mark.parametrize("distribution", ["clean", "fog/3", "imagenet_a"])
    def test_good_distribution(self, tmp_path, distribution):
        stage_io.validate_stage_args(str(tmp_path), distribution, "test")

    def test_bad_split(self, tmp_path):
        with pytest.raises(ValueError, match="--split='a/b' is not allowed"):
            stage_io.validate_stage_args(str(tmp_path), "clean", "a/b")


class TestClassNames:

    def test_ids_as_names_without_classes_json(self, tmp_path):
        assert stage_io.load_class_names(str(tmp_path), 2) == ["0", "1", "2"]

    def test_classes_json(self, tmp_path):
        records.write_json(Workdir(str(tmp_path)).classes, ["cat", "dog"])
        assert stage_io.load_class_names(str(tmp_path), 0) == ["cat", "dog"]

    def test_bad_classes_json(self, tmp_path):
        records.write_json(Workdir(str(tmp_path)).classes, {"0": "cat"})
        with pytest.raises(records.ContractError,
                           match="must hold a non-empty JSON list of class names"):
            stage_io.load_class_names(str(tmp_path), 0)


class TestManifestChecks:

    def test_mixed_datasets(self, tmp_path):
        records.add_manifest_rows(str(tmp_path), [manifest_row("a"),
                                                  manifest_row("b", dataset="other", seed=1)])
        with pytest.raises(records.ContractError, match=r"mixes datasets \['other', 'toy'\]"):
            stage_io.population_manifest(str(tmp_path))

    def test_dense_with_two_sparsities(self, tmp_path):
        records.add_manifest_rows(str(tmp_path), [manifest_row("a"),
                                                  manifest_row("b", sparsity=0.5)])
        with pytest.raises(records.ContractError, match="the dense population is one"):
            stage_io.population_manifest(str(tmp_path))

    def test_require_dense(self, tmp_path):
        manifest = pd.DataFrame([manifest_row("a", method="magnitude", sparsity=0.5)])
        with pytest.raises(records.ContractError, match=r"no dense population in .*population.csv"):
            stage_io.require_dense(manifest, str(tmp_path))


class TestReadCompactPredictions:

    def test_dtypes_and_member_rows(self, tmp_path):
        workdir = str(tmp_path)
        records.add_manifest_rows(workdir, [manifest_row("a"), manifest_row("b", seed=1)])
        write_member(workdir, "a", [0, 1], [0, 0])
        write_member(workdir, "b", [0, 1], [1, 1])
        manifest = stage_io.population_manifest(workdir)
        predictions, class_names = stage_io.read_compact_predictions(workdir, manifest)
        assert class_names == ["0", "1"]
        assert list(predictions["member"]) == [0, 0, 1, 1]
        assert predictions["label"].dtype == np.int32
        assert predictions["prob_predicted"].dtype == np.float32

    def test_no_rows(self, tmp_path):
        workdir = str(tmp_path)
        records.add_manifest_rows(workdir, [manifest_row("a")])
        write_member(workdir, "a", [], [])
        manifest = stage_io.population_manifest(workdir)
        with pytest.raises(records.ContractError, match="the predictions of clean .* have no rows"):
            stage_io.read_compact_predictions(workdir, manifest)

    def test_label_beyond_classes_json(self, tmp_path):
        workdir = str(tmp_path)
        records.add_manifest_rows(workdir, [manifest_row("a")])
        records.write_json(Workdir(workdir).classes, ["cat", "dog"])
        write_member(workdir, "a", [0, 1, 2], [0, 1, 1])
        manifest = stage_io.population_manifest(workdir)
        with pytest.raises(records.ContractError,
                           match=r"label 2 of image 2 \(member a\) is outside the class "
                                 r"range 0..1 \(.*classes.json lists 2 classes\)"):
            stage_io.read_compact_predictions(workdir, manifest)

    def test_negative_prediction(self, tmp_path):
        workdir = str(tmp_path)
        records.add_manifest_rows(workdir, [manifest_row("a")])
        write_member(workdir, "a", [0, 1], [-1, 1])
        manifest = stage_io.population_manifest(workdir)
        with pytest.raises(records.ContractError,
                           match=r"predicted -1 of image 0 \(member a\) is outside"):
            stage_io.read_compact_predictions(workdir, manifest)


class TestFreshness:

    def setup_stamp(self, tmp_path):
        workdir = str(tmp_path)
        source, output = tmp_path / "in.csv", tmp_path / "out" / "result.csv"
        source.write_text("x\n1\n")
        output.parent.mkdir()
        output.write_text("y\n2\n")
        args = (workdir, stamp_in(str(output.parent), "stage"), [str(source)], [str(output)])
        stage_io.write_stamp(*args, {"alpha": 0.05})
        return args, source, output

    def test_up_to_date_after_stamp(self, tmp_path):
        args, _, _ = self.setup_stamp(tmp_path)
        assert stage_io.is_up_to_date(*args, {"alpha": 0.05})

    def test_changed_input(self, tmp_path):
        args, source, _ = self.setup_stamp(tmp_path)
        source.write_text("x\n1\n2\n")
        assert not stage_io.is_up_to_date(*args, {"alpha": 0.05})

    def test_new_input_file(self, tmp_path):
        workdir = str(tmp_path)
        absent = tmp_path / "classes.json"
        (tmp_path / "out").mkdir()
        output = tmp_path / "out" / "r.csv"
        output.write_text("y\n")
        args = (workdir, stamp_in(str(output.parent), "stage"), [str(absent)], [str(output)])
        stage_io.write_stamp(*args, {})
        assert stage_io.is_up_to_date(*args, {})
        absent.write_text("[]")
        assert not stage_io.is_up_to_date(*args, {})

    def test_changed_options(self, tmp_path):
        args, _, _ = self.setup_stamp(tmp_path)
        assert not stage_io.is_up_to_date(*args, {"alpha": 0.01})

    def test_missing_or_edited_output(self, tmp_path):
        args, _, output = self.setup_stamp(tmp_path)
        output.write_text("y\n3\n4\n")
        assert not stage_io.is_up_to_date(*args, {"alpha": 0.05})
        os.remove(output)
        assert not stage_io.is_up_to_date(*args, {"alpha": 0.05})

    def test_no_stamp(self, tmp_path):
        assert not stage_io.is_up_to_date(
            str(tmp_path), stamp_in(str(tmp_path), "stage"), [], [], {})
