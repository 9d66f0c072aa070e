#!/usr/bin/env bash
# Python Celery's `delay(...).get()` round trip on this machine's Redis (broker and result backend),
# for `celeriac-bench results --with-celery`. Needs python3 (3.8+) with venv/pip and Redis running
# (scripts/test.sh starts it).
#
#   bench/celery/results.sh [--samples 1000] [--pool prefork|gevent] [--concurrency 2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=venv.sh
source "$here/venv.sh"
export BENCH_BROKER="${CELERIAC_REDIS_URL:-redis://127.0.0.1:6379/0}"
cd "$here" && exec "$venv/bin/python" bench_celery_results.py "$@"
