"""The study driver's up-to-date check: a rerun with nothing to do skips every stage."""
import os

from absl import flags

from pie.io import cli, records
from pie.io.workdir import Workdir
from pie.stages import study


def study_flags(workdir, *args):
    values = flags.FlagValues()
    study.define_flags(values)
    values(["study", f"--workdir={workdir}", *args])
    return cli.settings_of(values, "pie.stages.study")


def finished_study(tmp_path, *args):
    os.makedirs(tmp_path / "per_class")
    (tmp_path / "population.csv").write_text("member_id\n")
    (tmp_path / "per_class" / "tstatistic.csv").write_text("a\n1\n")
    values = study_flags(str(tmp_path), *args)
    records.write_json(Workdir(tmp_path).stamp("", "study"),
                       study._stamp_content(values, str(tmp_path)))
    return values


def test_same_flags_and_files_are_up_to_date(tmp_path):
    values = finished_study(tmp_path, "--seeds=3")
    assert study.is_up_to_date(study_flags(str(tmp_path), "--seeds=3"))
    assert study.is_up_to_date(values)


def test_a_changed_file_or_flag_runs_the_stages_again(tmp_path):
    finished_study(tmp_path, "--seeds=3")
    assert not study.is_up_to_date(study_flags(str(tmp_path), "--seeds=4"))
    assert not study.is_up_to_date(study_flags(str(tmp_path), "--seeds=3", "--noise_draws=4"))
    (tmp_path / "per_class" / "tstatistic.csv").write_text("a\n1\n2\n")
    assert not study.is_up_to_date(study_flags(str(tmp_path), "--seeds=3"))


def test_a_new_file_or_no_stamp_runs_the_stages_again(tmp_path):
    finished_study(tmp_path)
    (tmp_path / "groups.csv").write_text("image_id,g\n")
    assert not study.is_up_to_date(study_flags(str(tmp_path)))
    os.remove(Workdir(tmp_path).stamp("", "study"))
    assert not study.is_up_to_date(study_flags(str(tmp_path)))


def test_locks_and_temporaries_do_not_count(tmp_path):
    finished_study(tmp_path)
    (tmp_path / ".population.lock").write_text("")
    (tmp_path / ".tmp-host@1-x.csv").write_text("partial")
    assert study.is_up_to_date(study_flags(str(tmp_path)))
