#!/usr/bin/env bash
# nirbeam on Beam's portable runner, the way Flink/Spark/Dataflow-style job services are
# reached, with Beam's own local job service and an external SDK worker pool. Verified on
# the project's build machine (see deploy/README.md).
#
#   deploy/portable/local-job-service.sh INPUT... --out OUTDIR [--refs DIR] [...]
#
# Environment: JOB_PORT (default 8099), POOL_PORT (default 50000), PYTHON_ENV (default .venv).
set -euo pipefail
JOB_PORT=${JOB_PORT:-8099}
POOL_PORT=${POOL_PORT:-50000}
ENV=${PYTHON_ENV:-.venv}
# the worker pool starts SDK workers as plain "python": it must be the environment that has
# nirbeam installed, so that environment goes first on PATH
export PATH="$ENV/bin:$PATH"
LOGS=$(mktemp -d -t nirbeam-portable-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

setsid python -m apache_beam.runners.portability.local_job_service_main --port "$JOB_PORT" \
  >"$LOGS/job-service.log" 2>&1 &
pids+=($!)
setsid python -m apache_beam.runners.worker.worker_pool_main --service_port="$POOL_PORT" \
  >"$LOGS/worker-pool.log" 2>&1 &
pids+=($!)
for port in "$JOB_PORT" "$POOL_PORT"; do
  for _ in $(seq 150); do
    python -c "import socket,sys; socket.create_connection(('localhost', $port), 1)" 2>/dev/null && break
    sleep 0.2
  done
done

nirbeam run "$@" --runner portable --job-endpoint "localhost:$JOB_PORT" \
  --beam-environment_type=EXTERNAL --beam-environment_config="localhost:$POOL_PORT"
echo "service logs: $LOGS"
