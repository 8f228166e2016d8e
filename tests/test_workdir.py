"""Tests of pie.io.workdir: the one owner of the workdir layout."""
import ast
import os
import re

import pytest

from pie import commands
from pie.io import workdir as layout
from pie.io.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stage_files_clean_and_shifted():
    wd = Workdir("W")
    assert wd.file("tstatistic") == os.path.join("W", "per_class", "tstatistic.csv")
    assert wd.file("pie", "fog/3") == os.path.join("W", "pie", "fog-3", "pie.csv")
    assert wd.file("pie", "imagenet_a") == os.path.join("W", "pie", "imagenet_a", "pie.csv")
    assert wd.manifest == os.path.join("W", "population.csv")
    assert wd.relative_file("cost") == os.path.join("quantization", "cost.csv")


def test_predictions_paths():
    wd = Workdir("W")
    assert wd.predictions_path("dense_0_seed1") == os.path.join(
        "W", "predictions", "test", "clean", "dense_0_seed1.parquet")
    assert wd.predictions_dir("gaussian_noise/3") == os.path.join(
        "W", "predictions", "test", "gaussian_noise-3")
    assert wd.corruption_source("fog/1").endswith(
        os.path.join("predictions", "test", "fog-1", "corruption_source.json"))


def test_prediction_folders_lists_existing_distributions(tmp_path):
    wd = Workdir(tmp_path)
    assert wd.prediction_folders() == []
    for name in ("clean", "fog-3"):
        os.makedirs(wd.predictions_dir(name))
    (tmp_path / "predictions" / "test" / "stray.txt").write_text("not a folder")
    assert [os.path.basename(p) for p in wd.prediction_folders()] == ["clean", "fog-3"]


def test_member_layout():
    relpath = Workdir.member_relpath("magnitude", 0.9, 2)
    assert relpath == os.path.join("checkpoints", "magnitude", "sparsity_0.9", "seed_2")
    assert Workdir.member_relpath("dense", 0, 0).endswith(os.path.join("sparsity_0", "seed_0"))
    assert Workdir.member_relfile(relpath, "keras_model") == os.path.join(relpath, "model.keras")
    wd = Workdir("W")
    assert wd.member_file(relpath, "meta") == os.path.join("W", relpath, "meta.json")
    assert wd.model_path({"model_file": "a/model.tflite"}) == os.path.join("W", "a",
                                                                          "model.tflite")


def test_stamps_and_flags_files():
    wd = Workdir("W")
    assert wd.stamp("per_class", "gen_tstatistic", "fog/2") == os.path.join(
        "W", "per_class", "fog-2", ".gen_tstatistic.stamp.json")
    assert wd.flags_file("robustness", "analyze") == os.path.join(
        "W", "robustness", "analyze.flags.txt")
    assert layout.stamp_in("out", "report") == os.path.join("out", ".report.stamp.json")


def test_workdir_accepts_itself_and_paths(tmp_path):
    wd = Workdir(tmp_path)
    assert Workdir(wd) == wd and os.fspath(wd) == str(tmp_path)
    assert os.path.join(wd, "x") == os.path.join(str(tmp_path), "x")
    with pytest.raises(ValueError, match="a workdir path is required"):
        Workdir("")


def test_docs_layout_table_is_the_code_layout():
    text = open(os.path.join(ROOT, "docs", "contracts.md")).read()
    block = re.search(r"<!-- layout:begin -->\n(.*?)\n<!-- layout:end -->", text, re.S)
    assert block, "docs/contracts.md lacks the layout block"
    assert block.group(1) == layout.layout_markdown(), (
        "docs/contracts.md's layout table is stale: paste `python -m pie.io.workdir`")


def stage_files():
    for module in commands.STAGES.values():
        path = os.path.join(ROOT, *module.split(".")) + ".py"
        if os.path.exists(path):
            yield module, path


# A workdir path built from fragments: os.path.join / glob on the workdir variable.
FRAGMENT_JOIN = re.compile(
    r"os\.path\.join\(\s*(FLAGS\.|self\.|context\.)?(workdir|wd)\b|"
    r"glob\(\s*os\.path\.join\(\s*(FLAGS\.)?workdir")


@pytest.mark.parametrize("module, path", list(stage_files()))
def test_no_stage_joins_workdir_fragments(module, path):
    source = open(path).read()
    ast.parse(source)  # the file is a module we can read
    hits = [line.strip() for line in source.splitlines() if FRAGMENT_JOIN.search(line)]
    assert not hits, f"{module} builds workdir paths itself (use Workdir): {hits}"


def test_every_registered_stage_module_exists_or_is_planned():
    found = dict(stage_files())
    assert "save_checkpoint.train" in found and "pie.report.build" in found
    assert len(found) >= 14


def test_toy_figures_skip_links(tmp_path):
    wd = Workdir(tmp_path)
    os.makedirs(os.path.join(wd.toy_dir, "b"))
    for name in ("b/z.png", "a.png", "notes.txt"):
        (tmp_path / "toy" / name).write_bytes(b"\x89PNG")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    os.symlink(outside, tmp_path / "toy" / "link.png")
    assert [wd.relative(p) for p in wd.toy_figures()] == [
        os.path.join("toy", "a.png"), os.path.join("toy", "b", "z.png")]


def test_a_workdir_reached_through_a_link_is_used_but_no_link_inside_it(tmp_path):
    """W itself may be a link (the user named it); below it, no part may be one."""
    from pie.io import errors, records
    real = tmp_path / "real"
    (real / "per_class").mkdir(parents=True)
    os.symlink(real, tmp_path / "named")
    wd = Workdir(str(tmp_path / "named"))
    records.write_json(os.path.join(wd.root, "per_class", "x.json"), {"a": 1})
    assert records.read_json(str(real / "per_class" / "x.json")) == {"a": 1}
    assert wd.checked(os.path.join(wd.root, "not", "yet", "made.csv"))  # to be created
    os.symlink(real / "per_class", real / "linked")
    with pytest.raises(errors.ContractError) as raised:
        records.read_json(os.path.join(wd.root, "linked", "x.json"))
    assert str(raised.value) == (f"{wd.root}/linked is a symbolic link: nothing in a "
                                 "workdir is read or written through a link")
    with pytest.raises(errors.ContractError, match="x.json is a file, not a folder"):
        wd.checked(os.path.join(wd.root, "per_class", "x.json", "below"), "folder")
