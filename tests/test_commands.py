"""The `pie <stage>` command, and what the distribution installs."""
import os
import subprocess
import sys
import zipfile
from unittest import mock

import pytest

from pie import commands

from conftest import ROOT, error_lines


def run_pie(*args):
    return subprocess.run([sys.executable, "-m", "pie", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_help_lists_every_stage_with_its_module():
    result = run_pie("--help")
    assert result.returncode == 0
    for name, module in commands.available_stages().items():
        assert f"  {name:<22} python -m {module}" in result.stdout


def test_unknown_stage_is_one_line_and_exit_2():
    result = run_pie("trian")
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: unknown stage 'trian'; allowed: {', '.join(commands.available_stages())}"]


def test_stage_runs_as_its_module_does():
    via_pie = run_pie("t-test", "--workdir=/no/such/folder")
    via_module = subprocess.run(
        [sys.executable, "-m", "per_class_accuracy.gen_tstatistic", "--workdir=/no/such/folder"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert via_pie.returncode == via_module.returncode == 2
    assert error_lines(via_pie) == error_lines(via_module) == [
        "error: --workdir=/no/such/folder is not a folder"]


def test_stage_help_names_the_stage_flags():
    result = run_pie("report", "--help")
    module = subprocess.run([sys.executable, "-m", "pie.report.build", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == module.returncode  # absl's own exit code for --help
    assert "--strict" in result.stdout and "--format" in result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), ROOT], check=True, capture_output=True, timeout=300)
    (path,) = [os.path.join(out, name) for name in os.listdir(out) if name.endswith(".whl")]
    return zipfile.ZipFile(path)


def test_distribution_installs_pie_and_the_four_published_stage_packages_only(wheel):
    """The wheel installs `pie` and the four stage folders that keep the published
    code's names (docs/architecture.md), and nothing else at the top level: no tests,
    benchmarks or configs, no stray modules."""
    top_level = {name.split("/")[0] for name in wheel.namelist()
                 if ".dist-info" not in name.split("/")[0]}
    assert top_level == {"pie", "save_checkpoint", "per_class_accuracy", "pie_dataset_gen",
                         "robustness_tests"}
    assert "pie/report/templates/report.html.j2" in wheel.namelist()


def test_distribution_installs_the_pie_command(wheel):
    (entry_points,) = [name for name in wheel.namelist() if name.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text and "pie = pie.commands:main" in text


def test_help_the_study_the_report_and_the_workdir_derive_from_one_stage_table():
    """pie --help, the study's plan and --skip names, the report's producers and the
    workdir's writers name the stages of pie.commands.TABLE, and agree with it."""
    import re
    from absl import flags
    from pie.io import workdir
    from pie.report import sections
    from pie.stages import study
    table = {stage.name: stage.module for stage in commands.TABLE}
    assert commands.STAGES == table
    # The study runs the table's study stages, in its order, under the table's names.
    assert study.STAGE_NAMES == tuple(s.name for s in commands.TABLE if s.in_study)
    assert "pies" in study.STAGE_NAMES and "pie" not in study.STAGE_NAMES
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", "--workdir=W", "--groups_csv=g.csv", "--group_attributes=a"])
    from pie.io import cli
    settings = cli.settings_of(values, "pie.stages.study")
    planned = study.plan(settings, "digits")
    assert [s.name for s in planned] == [n for n in study.STAGE_NAMES if n != "train"]
    assert all(s.module == table[s.name] for s in planned)
    skipped = study.plan(settings.replace(skip=["pies", "cost"]), "digits")
    assert {"pies", "cost"}.isdisjoint(s.name for s in skipped)
    # The report's command for each input is its writing stage's, from the table: a
    # stage that needs another's outputs (robustness after corruptions) runs it first.
    assert sections.PRODUCERS["pie/pie.csv"] == (
        "python -m pie_dataset_gen.aggregate_predictions --workdir={W}")
    assert sections.PRODUCERS["robustness/excess_error.csv"] == (
        "python -m robustness_tests.corruptions --workdir={W} && "
        "python -m robustness_tests.analyze --workdir={W}")
    for relative, command in sections.PRODUCERS.items():
        named = re.findall(r"python -m ([\w.]+)", command)
        assert named[-1] in modules_writing(relative), (relative, command)
    # Every file of the layout names its writers by stage name; a file one stage
    # writes is recorded in that stage's stamp, one several write (the manifest) in none.
    for entry in workdir.FILES.values():
        assert set(entry.stages) <= set(table), entry
        assert entry.writer == (table[entry.stages[0]] if len(entry.stages) == 1 else None)
    assert workdir.FILES["manifest"].stages == ("train", "quantize", "import-members")
    assert workdir.FILES["groups"].writer is None and workdir.FILES["groups"].written_by() == "you"
    # A stage added to the table (a writer of a new file) is its writer and producer.
    extra = commands.Stage("extra", "pie.stages.extra", True, needs=("cost",))
    with mock.patch.object(commands, "TABLE", commands.TABLE + (extra,)), \
            mock.patch.dict(commands.STAGES, extra=extra.module), \
            mock.patch.dict(commands.BY_NAME, extra=extra):
        assert commands.command("extra") == ("python -m pie.stages.cost --workdir={W} && "
                                             "python -m pie.stages.extra --workdir={W}")
        assert workdir.Entry("x", "x.csv", ("extra",), "").writer == "pie.stages.extra"


def modules_writing(relative):
    """The stage modules FILES names for the file `relative` (folder/name) of W."""
    from pie.io import workdir
    return {commands.STAGES[name] for entry in workdir.FILES.values()
            if "/".join(p for p in (entry.folder, entry.name) if p) == relative
            for name in entry.stages}
