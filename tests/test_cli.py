import pytest

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


def test_every_bad_input_error_is_reported_by_cli_run():
    for error in (errors.UsageError, errors.ContractError, errors.DataError,
                  errors.ModelError, errors.PruningError):
        assert issubclass(error, cli.user_errors())
