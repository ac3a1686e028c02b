#!/usr/bin/env bash
# A dask.distributed cluster on one machine (one scheduler, N one-thread worker processes),
# and nirbeam run against it. Verified on the project's build machine (see deploy/README.md).
#
#   deploy/dask-local.sh INPUT... --out OUTDIR [--refs DIR] [other nirbeam run options]
#
# Environment: WORKERS (default 2), PORT (scheduler port, default 8786), PYTHON_ENV (the
# environment with nirbeam and apache-beam[dask] installed; default .venv).
set -euo pipefail
WORKERS=${WORKERS:-2}
PORT=${PORT:-8786}
ENV=${PYTHON_ENV:-.venv}
export PATH="$ENV/bin:$PATH"
RUNDIR=$(mktemp -d -t nirbeam-dask-XXXXXX)
SCHED="$RUNDIR/scheduler.json"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$RUNDIR"
}
trap cleanup EXIT INT TERM

# 1. the scheduler (it writes its address to the scheduler file)
dask scheduler --port "$PORT" --dashboard-address :0 --scheduler-file "$SCHED" \
  >"$RUNDIR/scheduler.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$SCHED" ] && break; sleep 0.2; done
[ -s "$SCHED" ] || { echo "dask scheduler did not start: $(cat "$RUNDIR/scheduler.log")" >&2; exit 1; }

# 2. the workers: one process each, one thread each (detector1 is one core per integration)
for i in $(seq "$WORKERS"); do
  dask worker --scheduler-file "$SCHED" --nworkers 1 --nthreads 1 --name "w$i" \
    --local-directory "$RUNDIR" >"$RUNDIR/worker$i.log" 2>&1 &
  pids+=($!)
done
python - "$SCHED" "$WORKERS" <<'PY'
import sys
from distributed import Client
with Client(scheduler_file=sys.argv[1], timeout=60) as c:
    c.wait_for_workers(int(sys.argv[2]), timeout=120)
PY

# 3. nirbeam: the driver runs here, the per-integration work on the workers
nirbeam run "$@" --runner dask --dask-scheduler-file "$SCHED"
