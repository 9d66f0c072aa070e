#!/usr/bin/env bash
# Python Celery's `chord(group(noop.s(i) for i in range(N)))(tsum.s())` on this machine's Redis (or
# RabbitMQ with --broker amqp://…), with the Redis result backend, for `celeriac-bench chord
# --with-celery`. Needs python3 (3.8+) with venv/pip and the brokers running (scripts/test.sh
# starts them).
#
#   bench/celery/chord.sh [--members 10000] [--rounds 3] [--broker URL] [--concurrency 2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CELERY_BENCH_VENV:-$here/../../target/celery-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "celery[redis]==5.*" "redis>=5" psutil gevent >&2
fi
export BENCH_RUN="run$$"
cd "$here" && exec "$venv/bin/python" bench_celery_chord.py "$@"
