"""Runs one stage script under tensorflow-datasets' test double (`tfds.testing.mock_data`).

  python tests/tfds_mock_stage.py <num_examples> <module> [flags...]

The stage runs as `python -m <module>` would, but every tfds dataset it opens is
tfds's generated mock data (the same images in every process), so the stages of a
tfds study can be tested end to end without downloading anything.
"""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pie  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow_datasets as tfds  # noqa: E402


def main():
    num_examples, module = int(sys.argv[1]), sys.argv[2]
    sys.argv = [module] + sys.argv[3:]
    with tfds.testing.mock_data(num_examples=num_examples):
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def run_mocked(num_examples, module, *flags):
    """Runs the stage under mock_data in a subprocess; fails with its output when it fails."""
    import subprocess
    result = subprocess.run([sys.executable, os.path.abspath(__file__), str(num_examples),
                             module, *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if result.returncode != 0:
        raise AssertionError(f"{module} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


if __name__ == "__main__":
    main()
