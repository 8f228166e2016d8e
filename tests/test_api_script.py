"""The Python API in any script (issue 25.6): the docs/api.md session runs as a plain
script without an `if __name__ == "__main__"` guard, and from standard input; the
corruption workers never re-run the caller's script."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# Corrupts through 2 worker processes (tasks of 2 images) and compares with this
# process's own result; a worker that re-ran the script would start workers of its own
# and break the pool. Prints how many times the script started.
POOL_SNIPPET = '''
import numpy as np
from pie.shift import corruptions, pool
print("script started", flush=True)
images = np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
ids = np.arange(8)
with pool.CorruptionPool(workers=2, task_bytes=2 * 16 * 16 * 3 * 4) as workers:
    got = workers.corrupt(images, ids, "gaussian_noise", 3, seed=0, scale="auto")
want = corruptions.corrupt_batch(images, ids, "gaussian_noise", 3, seed=0, scale="auto")
assert np.array_equal(got, want)
print("pool ok", flush=True)
'''


def api_session():
    """The Python block of docs/api.md's "A session"."""
    with open(os.path.join(ROOT, "docs", "api.md")) as handle:
        text = handle.read()
    section = text[text.index("## A session"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_python(args, cwd, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=600)


# An end-to-end run (about 46 s): with the smoke studies in the slow step, which CI runs.
@pytest.mark.slow
def test_the_api_session_runs_as_a_plain_script(tmp_path):
    script = tmp_path / "session.py"
    code = api_session() + POOL_SNIPPET
    assert "__main__" not in code
    script.write_text(code)
    result = run_python([str(script)], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("script started") == 1
    assert "pool ok" in result.stdout
    report = tmp_path / "runs" / "api-demo" / "report" / "summary.md"
    assert report.exists()
    assert "dense_0_seed2" in (tmp_path / "runs" / "api-demo" / "population.csv").read_text()


def test_corruption_workers_from_standard_input(tmp_path):
    result = run_python(["-"], cwd=str(tmp_path), stdin=POOL_SNIPPET)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("script started") == 1 and "pool ok" in result.stdout
