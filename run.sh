#!/usr/bin/env bash
# The commands of the README:
#   bash run.sh [--workdir=DIR]   the whole study on the embedded data (default runs/demo)
#   bash run.sh --flagfile=configs/NAME.cfg [--workdir=DIR]   a study written in a config
#   bash run.sh --dataset=digits --model=mlp --seeds=2 --epochs=2 --workdir=DIR
#                                 any study: save_checkpoint.train's flags and the later
#                                 stages' (python -m pie.stages.study --help lists them)
#   bash run.sh test [ARGS]        the test suite (ARGS go to pytest)
# Both create or reuse .venv and install the package into it first, at the versions
# pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
# Install the pinned versions (constraints.txt: what CI ran); reinstall only when
# setup.py or constraints.txt changed since the last install.
stamp="$VENV/.installed-$(cat setup.py constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "== installing into $VENV (first run takes a few minutes)"
  "$PY" -m pip install -q -c constraints.txt --upgrade pip setuptools wheel
  "$PY" -m pip install -q -c constraints.txt -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

if [ "${1:-}" = "test" ]; then
  shift
  # One pytest worker per core, at most 4 (pytest-xdist; PIE_TEST_WORKERS=0 runs the
  # tests in this process); a test file stays on one worker, so its module fixtures
  # (a trained population) are built once.
  workers="${PIE_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}"
  exec "$PY" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile \
    --durations=20 "$@" tests
fi

# The study: pie.stages.study runs every stage, each as its own process, passing each
# what it needs; its flags are save_checkpoint.train's (defaults: the embedded study)
# and the later stages' choices, on the command line or in a --flagfile (configs/).
export PYTHONUNBUFFERED=1
# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are dropped from the output;
# the exit code is the study's (pipefail: quiet itself always succeeds).
quiet() { grep --line-buffered -v -E '^(WARNING: All log messages before absl|I0000 |W0000 |E0000 )' || true; }
"$PY" -m pie.stages.study "$@" 2>&1 | quiet
