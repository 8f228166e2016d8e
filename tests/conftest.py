"""Shared fixtures: a tiny trained population, and a helper to run stage scripts."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Split-size caches of data folders outside a workdir go to the user's cache folder:
# tests keep theirs in a temporary one, never in ~/.cache.
os.environ.setdefault("PIE_CACHE_DIR", tempfile.mkdtemp(prefix="pie-test-cache-"))

# The tiny population every stage test can start from: digits, 2 levels x 2 seeds,
# one epoch each (about 20 s on 2 cores).
TINY_POPULATION_FLAGS = [
    "--dataset=digits", "--model=small_cnn", "--width=4", "--sparsities=0,0.5",
    "--seeds=2", "--epochs=1", "--batch_size=64", "--learning_rate=0.01",
]


SLOW_REASON = "slow: run with `bash run.sh test -m slow`"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: left out of the default run (the suite's "
                            "time budget); `-m slow` runs them")


# The longest test files, started first, longest first: `bash run.sh test` gives each
# pytest worker whole files in collection order (pytest-xdist --dist loadfile), the
# next file to the first worker free. A long file started last leaves the other core
# idle until it ends (the suite ran at 1.84 of 2 cores with test_train.py alone
# first); these are the files of CI's 20 slowest tests, but for those now marked slow.
LONGEST_FILES = ("test_train.py", "test_precision.py", "test_api.py", "test_new_methods.py",
                 "test_cost_pool.py", "test_links.py", "test_quantize_workers.py",
                 "test_lost_in_pruning.py", "test_predictions.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first; slow tests run only when -m names them: the default
    suite stays in its budget."""
    order = {name: rank for rank, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable
    if "slow" in (config.getoption("markexpr") or ""):
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=SLOW_REASON))


def run_stage(module, *flags, check=True, timeout=600):
    """Runs `python -m module flags...` from the repo root; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def error_lines(result):
    """The lines of stderr that are not TensorFlow's start-up chatter."""
    return [line for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "W0000",
                                                      "E0000"))]


PROGRESS_LINE = re.compile(r".* \| .* \d+/\d+, [0-9.]+/(s|min), ETA \S+$")


def problem_lines(result):
    """error_lines without the progress lines a stage printed before it stopped
    (pie.io.progress: `message | label k/n, rate, ETA t`)."""
    return [line for line in error_lines(result) if not PROGRESS_LINE.match(line)]


@pytest.fixture(scope="session", autouse=True)
def temp_files_in_pytests_folder(tmp_path_factory):
    """Temporary files made in a test process go to pytest's temporary folder, which
    pytest prunes, not the system's: tfds keeps an empty folder there for every mocked
    or unprepared set it opens (pie.data.sources.tfds_builder avoids it; tfds.load and
    tfds.testing.mock_data do not)."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfiles"))
    yield
    tempfile.tempdir = before


@pytest.fixture(scope="session")
def tiny_population(tmp_path_factory):
    """A workdir with a trained 4-member digits population (read-only for tests)."""
    workdir = str(tmp_path_factory.mktemp("population"))
    run_stage("save_checkpoint.train", f"--workdir={workdir}", *TINY_POPULATION_FLAGS)
    return workdir


@pytest.fixture(scope="session")
def tiny_predictions(tiny_population, tmp_path_factory):
    """A copy of the tiny population with clean predictions and the PIE table."""
    import shutil
    workdir = str(tmp_path_factory.mktemp("predicted") / "w")
    shutil.copytree(tiny_population, workdir)
    run_stage("pie_dataset_gen.predictions", f"--workdir={workdir}")
    run_stage("pie_dataset_gen.aggregate_predictions", f"--workdir={workdir}")
    return workdir
