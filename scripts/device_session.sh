#!/usr/bin/env bash
# One prepared GPU session (issues #4 and #6), to run in the repository root of the device machine:
#   1. the ensemble benchmark at M = 64 (eager, torch.compile, bf16), appended to benchmarks/results.jsonl;
#   2. the paper profile of the Sec. 6 experiments, resumable, inside a time budget (seconds);
#   3. everything packed into $OUT/device-results.tgz (benchmark lines, records, sweep logs, tables).
# The device image has torch but not pydantic or array-api-compat: fetch their wheels here first
# (scripts/device_wheels.sh) and carry .whl. Settings by environment variables:
#   DEVICE=cuda PROFILE=paper BUDGET=360 WORKERS=6 BENCH="--members 64 --steps 100 --repeats 3"
#   WHEELS=.whl BENCH_OUT=benchmarks/results.jsonl OUT=$OUT PYTHON=python3
set -u
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-paper}
BUDGET=${BUDGET:-360}
WORKERS=${WORKERS:-6}
BENCH=${BENCH:---members 64 --steps 100 --repeats 3}
OUT=${OUT:-/tmp/infoflow-out}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
BENCH_OUT=${BENCH_OUT:-benchmarks/results.jsonl}
export PYTHONUNBUFFERED=1
if [ -d "$WHEELS" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
$PY -c "import torch, infoflow; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'infoflow', infoflow.__version__)" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
start=$(date +%s)
# shellcheck disable=SC2086
timeout 180 $PY benchmarks/bench_ensemble.py $BENCH --device "$DEVICE" --out "$BENCH_OUT" || echo "benchmark: exit $?"
echo "benchmark done after $(( $(date +%s) - start )) s"
timeout "$BUDGET" $PY -m infoflow.cli reproduce --profile "$PROFILE" --only intrinsic-dimension --only triangle-center \
    --device "$DEVICE" --workers "$WORKERS" --quiet || echo "reproduce: exit $? (a sweep cut by the budget resumes on the next call)"
echo "all done after $(( $(date +%s) - start )) s"
tar czf "$OUT/device-results.tgz" "$BENCH_OUT" data/MANIFEST.json \
    $(ls -d data/*/"$PROFILE" 2>/dev/null) && ls -l "$OUT"
