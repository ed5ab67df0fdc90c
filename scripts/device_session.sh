#!/usr/bin/env bash
# One prepared GPU session (issues #4 and #6), to run in the repository root of the device machine:
#   1. the ensemble benchmark at M = 64 (eager, torch.compile, bf16), then for each experiment of GROUPING
#      per-configuration against shared-shape ensembles (bench_ensemble.py --grouping), appended to
#      benchmarks/results.jsonl, within BENCH_LIMIT seconds;
#   2. unless GRAPH=off, whether a training step replayed as a CUDA graph trains as the eager one, and
#      how much faster (benchmarks/check_cuda_graph.py, within GRAPH_LIMIT seconds); if it agrees (or
#      GRAPH=on), what follows trains with --cuda-graph, else eagerly;
#   3. with TIMING set, the wall time of the whole Sec. 6 profile extrapolated from two short from-scratch
#      runs of it side by side (benchmarks/time_profile.py $TIMING, within TIMING_LIMIT seconds);
#   4. paper-profile sweeps, all at once (one process each, with its own number of ensembles in flight),
#      resumable, until TOTAL seconds after the start, into ROOT/EXPERIMENT/PROFILE (ROOT=data: what the
#      book renders; another ROOT times a whole profile from scratch). SWEEPS holds one line per sweep:
#      "EXPERIMENT WORKERS [--set key=value ...]" (default: the two Sec. 6 experiments);
#   5. everything packed into $OUT/device-results.tgz (benchmark lines, records, sweep logs, logs, and the
#      hidden .*.ckpt training states of ensembles the budget cut: unpack them into ROOT on the next call,
#      e.g. an ignored runs/ folder carried with `carry`, and the sweep continues from them).
# Back here: `infoflow ingest device-results.tgz` (new records, sweep and benchmark lines, tables, data/MANIFEST.json;
# the checkpoints of cut ensembles go to runs/device/EXPERIMENT/PROFILE, to carry back and resume from).
# Many small processes on one GPU only overlap their kernels under MPS: it is started when the image
# has it and a CUDA call works through it, else the sweep runs without (time-sliced).
# The device image has torch but not pydantic or array-api-compat: fetch their wheels here first
# (scripts/device_wheels.sh) and carry .whl. Settings by environment variables:
#   DEVICE=cuda PROFILE=paper TOTAL=550 BENCH_LIMIT=130 (0: no benchmark) SWEEPS=$'intrinsic-dimension 3\ntriangle-center 4'
#   BENCH='--members 64 --steps 40 --repeats 3' (empty: skip it) GROUPING='intrinsic-dimension triangle-center' ROOT=data
#   TIMING='--steps 500 1500' (empty, the default: skip it) TIMING_LIMIT=240
#   GRAPH=auto (on: --cuda-graph without the check; off: eager, no check) GRAPH_LIMIT=120 GRAPH_CHECK='' (its options)
#   CKPT_EVERY=30 (seconds between saves of each ensemble's training state: what a cut sweep loses at most)
# Example, the whole Sec. 6 paper profile timed from scratch in /tmp/sec6 (its D = 5, 6 records are the
# ones data/ lacks), then the longer schedule at T = 64:
#   BENCH= BENCH_LIMIT=90 TOTAL=540 ROOT=/tmp/sec6 bash scripts/device_session.sh
#   BENCH_LIMIT=0 TOTAL=400 SWEEPS='intrinsic-dimension-long 1' bash scripts/device_session.sh
# or, in one call of a 15-minute session: the CUDA-graph check, the profile's time from short runs, then
# the D = 5, 6 records data/ lacks (all that intrinsic-dimension's paper sweep still has to train) and,
# beside them, D = 2 trained 3x longer at T = 64 (is 20k steps short of convergence?; resumes if cut):
#   BENCH_LIMIT=0 TIMING='--steps 500 1500' TOTAL=540 SWEEPS=$'intrinsic-dimension 2\nintrinsic-dimension-long 1' bash scripts/device_session.sh
set -u
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-paper}
TOTAL=${TOTAL:-550}
BENCH_LIMIT=${BENCH_LIMIT:-130}
SWEEPS=${SWEEPS:-$'intrinsic-dimension 3\ntriangle-center 4'}
BENCH=${BENCH---members 64 --steps 40 --repeats 3}
GROUPING=${GROUPING-intrinsic-dimension triangle-center}
ROOT=${ROOT:-data}
CKPT_EVERY=${CKPT_EVERY:-30}
TIMING=${TIMING:-}
TIMING_LIMIT=${TIMING_LIMIT:-240}
GRAPH=${GRAPH:-auto}
GRAPH_LIMIT=${GRAPH_LIMIT:-120}
GRAPH_CHECK=${GRAPH_CHECK:-}
OUT=${OUT:-/tmp/infoflow-out}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
BENCH_OUT=${BENCH_OUT:-benchmarks/results.jsonl}
export PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$OUT"
if [ -d "$WHEELS" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch, infoflow; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'infoflow', infoflow.__version__)" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
nproc

if [ "$BENCH_LIMIT" -gt 0 ]; then
    # shellcheck disable=SC2086
    timeout "$BENCH_LIMIT" bash -c "
        [ -z \"$BENCH\" ] || $PY benchmarks/bench_ensemble.py $BENCH --device $DEVICE --out $BENCH_OUT || echo \"benchmark: exit \$?\"
        for exp in $GROUPING; do
            $PY benchmarks/bench_ensemble.py --grouping \$exp --steps 20 --repeats 3 --device $DEVICE --out $BENCH_OUT || echo \"grouping \$exp: exit \$?\"
        done" || echo "benchmarks: exit $? (BENCH_LIMIT $BENCH_LIMIT s)"
    echo "benchmarks done after $(( $(date +%s) - start )) s"
fi

MPS=off
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d && timeout 60 $PY -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
        MPS=on
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
fi
echo "MPS: $MPS"

GRAPH_FLAG=
if [ "$DEVICE" = cuda ] && [ "$GRAPH" = on ]; then
    GRAPH_FLAG=--cuda-graph
elif [ "$DEVICE" = cuda ] && [ "$GRAPH" != off ]; then
    # shellcheck disable=SC2086
    if timeout "$GRAPH_LIMIT" $PY benchmarks/check_cuda_graph.py --device "$DEVICE" --out "$BENCH_OUT" $GRAPH_CHECK; then
        GRAPH_FLAG=--cuda-graph
    else
        echo "cuda graph check: exit $? (1: it disagrees or failed, see above; 124: GRAPH_LIMIT $GRAPH_LIMIT s): eager training"
    fi
    echo "cuda graph check done after $(( $(date +%s) - start )) s"
fi
echo "CUDA graphs: ${GRAPH_FLAG:-off}"

if [ -n "$TIMING" ]; then
    # shellcheck disable=SC2086
    timeout "$TIMING_LIMIT" $PY benchmarks/time_profile.py $TIMING $GRAPH_FLAG --profile "$PROFILE" --device "$DEVICE" --out "$BENCH_OUT" \
        || echo "timing: exit $? (TIMING_LIMIT $TIMING_LIMIT s)"
    echo "timing done after $(( $(date +%s) - start )) s"
fi

budget=$(( TOTAL - ($(date +%s) - start) ))
echo "sweep budget: $budget s"
n=0
while read -r exp workers sets; do
    [ -n "$exp" ] || continue
    n=$((n + 1))
    # shellcheck disable=SC2086
    (timeout "$budget" $PY -m infoflow.cli run "$exp" --profile "$PROFILE" --out "$ROOT/$exp/$PROFILE" --device "$DEVICE" \
        --workers "$workers" --checkpoint-every "$CKPT_EVERY" --quiet $GRAPH_FLAG $sets > "$OUT/sweep$n-$exp.log" 2>&1 \
        || echo "$exp: exit $? (a sweep cut by the budget resumes on the next call)" >> "$OUT/sweep$n-$exp.log") &
done <<< "$SWEEPS"
while [ -n "$(jobs -r)" ]; do sleep 20; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; done
wait
tail -n 5 "$OUT"/*.log
echo "all done after $(( $(date +%s) - start )) s (MPS $MPS, CUDA graphs ${GRAPH_FLAG:-off})"
tar czf "$OUT/device-results.tgz" "$BENCH_OUT" $(ls -d "$ROOT"/*/"$PROFILE" 2>/dev/null) && ls -l "$OUT"
