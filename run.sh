#!/usr/bin/env bash
# The two commands of the README:
#   bash run.sh [--workdir=DIR]   the whole study on the embedded data (default runs/demo)
#   bash run.sh test [ARGS]        the test suite (ARGS go to pytest)
# Both create or reuse .venv and install the package into it first.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when setup.py changed since the last install.
stamp="$VENV/.installed-$(sha1sum setup.py | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "== installing into $VENV (first run takes a few minutes)"
  "$PY" -m pip install -q --upgrade pip setuptools wheel
  "$PY" -m pip install -q -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

if [ "${1:-}" = "test" ]; then
  shift
  exec "$PY" -m pytest -q -p no:cacheprovider "$@" tests
fi

WORKDIR=runs/demo
for arg in "$@"; do
  case "$arg" in
    --workdir=*) WORKDIR="${arg#--workdir=}" ;;
    *) echo "error: unknown argument '$arg'; allowed: test, --workdir=DIR" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORKDIR"
export PYTHONUNBUFFERED=1
start=$(date +%s)
stage() {
  local name="$1"; shift
  echo "== stage $name: $*"
  "$PY" -m "$@"
}

stage train save_checkpoint.train --workdir="$WORKDIR" --dataset=mnist5k --model=small_cnn \
  --sparsities=0,0.5,0.8,0.95 --seeds=5

echo "== done in $(( $(date +%s) - start ))s; results in $WORKDIR"
