import json
import subprocess
import sys

import pytest

from conftest import ROOT, error_lines

from pie.io import cli, errors


def test_parsers_and_their_messages():
    assert cli.parse_floats("0, 0.5,0.9", "sparsities") == [0.0, 0.5, 0.9]
    assert cli.parse_ints("1,2", "severities") == [1, 2]
    assert cli.parse_names("all", "modes", ["a", "b"]) == ["a", "b"]
    assert cli.parse_names("b", "modes", ["a", "b"]) == ["b"]
    with pytest.raises(errors.UsageError,
                       match="--sparsities must be comma-separated numbers, got '0,x'"):
        cli.parse_floats("0,x", "sparsities")
    with pytest.raises(errors.UsageError, match="--severities is empty"):
        cli.parse_ints(" , ", "severities")
    with pytest.raises(errors.UsageError, match="unknown --modes c; allowed: a, b or all"):
        cli.parse_names("a,c", "modes", ["a", "b"])


def test_require_workdir(tmp_path):
    cli.require_workdir(str(tmp_path))
    with pytest.raises(errors.UsageError,
                       match="--workdir is required: the folder holding population.csv"):
        cli.require_workdir(None)
    with pytest.raises(errors.UsageError, match="--workdir=/no/such is not a folder"):
        cli.require_workdir("/no/such")


STAGE = ("import sys; sys.path.insert(0, {root!r}); from pie.io import cli, errors\n"
         "def main(argv):\n    raise {error}('the input is bad in this way')\n"
         "cli.run(main)\n")


@pytest.mark.parametrize("error", ["errors.UsageError", "errors.ContractError",
                                   "errors.DataError", "errors.ModelError",
                                   "errors.PruningError"])
def test_every_bad_input_error_is_reported_by_cli_run(error):
    """A stage whose main raises any bad-input error exits 2 with one error: line."""
    result = subprocess.run([sys.executable, "-c", STAGE.format(root=ROOT, error=error)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert error_lines(result) == ["error: the input is bad in this way"]


def test_a_bug_is_not_reported_as_bad_input():
    result = subprocess.run([sys.executable, "-c", STAGE.format(root=ROOT, error="KeyError")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "error: " not in result.stderr


# Runs a stage module as `python -m` would, and prints its exit code and whether
# TensorFlow (or tf_keras, tfmot) was imported by the time it exited.
REFUSAL = ("import json, runpy, sys\n"
           "sys.path.insert(0, {root!r}); sys.argv = [{module!r}, *{args!r}]\n"
           "try:\n    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
           "except SystemExit as end:\n    code = end.code\n"
           "heavy = ['tensorflow', 'tf_keras', 'tensorflow_model_optimization']\n"
           "print(json.dumps([code, [name for name in heavy if name in sys.modules]]))\n")


@pytest.mark.parametrize("module, args, code, message", [
    ("save_checkpoint.train", ["--nonexistent_flag"], 2,
     "error: Unknown command line flag 'nonexistent_flag'"),
    ("save_checkpoint.train", ["--epochs=-1"], 2,
     "error: --epochs must be at least 1 (0 only with --init_from), got -1"),
    ("save_checkpoint.train", ["--help"], 1, None),
    ("pie.stages.study", ["--nonexistent_flag"], 2,
     "error: Unknown command line flag 'nonexistent_flag'"),
    ("pie.stages.study", ["--seeds=0"], 2, "error: --seeds must be in [1, 10000], got 0"),
])
def test_training_and_study_refuse_flags_without_loading_tensorflow(tmp_path, module, args,
                                                                    code, message):
    """A refused flag or --help is answered before TensorFlow loads (seconds of CPU
    otherwise, for every refusal the tests and users get)."""
    workdir = tmp_path / "w"
    result = subprocess.run(
        [sys.executable, "-c", REFUSAL.format(root=ROOT, module=module,
                                               args=[f"--workdir={workdir}", *args])],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    exit_code, loaded = json.loads(result.stdout.splitlines()[-1])
    assert exit_code == code, result.stderr
    if message:
        assert error_lines(result) == [message]
    else:
        assert "--workdir" in result.stdout  # the flags' help
    assert loaded == []
    assert not workdir.exists()
