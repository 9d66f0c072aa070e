#!/usr/bin/env bash
# Python Celery's `delay(...).get()` round trip on this machine's Redis (broker and result backend),
# for `celeriac-bench results --with-celery`. Needs python3 (3.8+) with venv/pip and Redis running
# (scripts/test.sh starts it).
#
#   bench/celery/results.sh [--samples 1000] [--pool prefork|gevent] [--concurrency 2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CELERY_BENCH_VENV:-$here/../../target/celery-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "celery[redis]==5.*" "redis>=5" psutil gevent >&2
fi
export BENCH_RUN="run$$"
export BENCH_BROKER="${CELERIAC_REDIS_URL:-redis://127.0.0.1:6379/0}"
cd "$here" && exec "$venv/bin/python" bench_celery_results.py "$@"
