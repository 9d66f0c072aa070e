#!/usr/bin/env bash
# Measures Python Celery on this machine's Redis and RabbitMQ with the same scenarios as
# celeriac-bench, so docs/benchmarks.md compares like with like. Needs python3 (3.8+) with venv/pip
# and the brokers running (scripts/test.sh starts them).
#
#   bench/celery/run.sh [--tasks 20000] [--pool prefork|gevent] [--concurrency 2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=venv.sh
source "$here/venv.sh"
for broker in redis amqp; do
  if [[ $broker == redis ]]; then
    export BENCH_BROKER="${CELERIAC_REDIS_URL:-redis://127.0.0.1:6379/0}"
  else
    export BENCH_BROKER="${CELERIAC_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672//}"
  fi
  (cd "$here" && "$venv/bin/python" bench_celery.py "$broker" "$@")
done
