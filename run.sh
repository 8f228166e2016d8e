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
# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) are dropped from the output.
quiet() { grep -v -E '^(WARNING: All log messages before absl|I0000 |W0000 |E0000 )' || true; }
stage() {
  local name="$1"; shift
  echo "== stage $name: $*"
  "$PY" -m "$@" 2>&1 | quiet
}

W="--workdir=$WORKDIR"
# 1. The population: dense plus magnitude pruning up to 0.95, 5 seeds each.
stage train save_checkpoint.train "$W" --dataset=mnist5k --model=small_cnn \
  --sparsities=0,0.5,0.8,0.95 --seeds=5 --epochs=6
# 2. Post-training quantization of the dense members (new manifest rows).
stage quantize pie.stages.quantize "$W" --modes=float16,dynamic_int8,full_int8
# 3. Predictions of every member, once; per-class t-test; PIEs and their TFRecords.
stage predictions pie_dataset_gen.predictions "$W"
stage per-class per_class_accuracy.aggregate_ckpt_metrics "$W"
stage t-test per_class_accuracy.gen_tstatistic "$W"
stage pie pie_dataset_gen.aggregate_predictions "$W"
stage pie-tfrecords pie_dataset_gen.generate_pie_dataset "$W"
# 4. Subgroups: image-property groups of mnist5k (examples/groups_mnist5k.md).
if [ ! -f "$WORKDIR/groups.csv" ]; then
  "$PY" examples/make_mnist5k_groups.py "$W" --output="$WORKDIR/groups.csv" 2>&1 | quiet
fi
stage subgroups per_class_accuracy.subgroups "$W" --groups_csv="$WORKDIR/groups.csv"
# 5. Distribution shift: every corruption at severity 3, then the Lost-in-Pruning metrics.
stage corruptions robustness_tests.corruptions "$W" --corruptions=all --severities=3
stage robustness robustness_tests.analyze "$W"
stage noise-similarity robustness_tests.noise_similarity "$W" --draws=5 --images=300
stage informative-features robustness_tests.informative_features "$W" --images=100
# 6. What each variant costs: size, gzip size, TFLite latency.
stage cost pie.stages.cost "$W" --repeats=10
# 7. A reduced toy criteria study (the full grid: docs/pruning_criteria.md).
stage toy pie.stages.toy_experiment --dataset=moons --seeds=3 \
  --samples_per_class=1,10,100 --out="$WORKDIR/toy"
# 8. The report.
stage report pie.report.build "$W" --format=md

echo "== done in $(( $(date +%s) - start ))s"
echo "report: $WORKDIR/report/index.html"
