#!/usr/bin/env bash
# Python Celery's `chord(group(noop.s(i) for i in range(N)))(tsum.s())` on this machine's Redis (or
# RabbitMQ with --broker amqp://…), with the Redis result backend, for `celeriac-bench chord
# --with-celery`. Needs python3 (3.8+) with venv/pip and the brokers running (scripts/test.sh
# starts them).
#
#   bench/celery/chord.sh [--members 10000] [--rounds 3] [--broker URL] [--concurrency 2]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=venv.sh
source "$here/venv.sh"
cd "$here" && exec "$venv/bin/python" bench_celery_chord.py "$@"
