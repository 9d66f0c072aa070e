#!/usr/bin/env bash
# The whole comparison in one go, on this machine's brokers, every system draining the same number of
# tasks: celeriac (memory, Redis, RabbitMQ, and RabbitMQ sharded; three runs each), Python Celery
# (prefork -c 2 and gevent -c 64, both brokers) and the Rust peers (rusty-celery and apalis, both
# brokers). Results go to docs/bench-results/chart/, and docs/benchmarks.svg is redrawn from them
# alone. Takes about 20 minutes; start the brokers first (scripts/test.sh does).
#
#   bench/run-all.sh            # N = 20000
#   TASKS=50000 bench/run-all.sh
#   RAW_SWEEP=1 bench/run-all.sh   # also the raw lapin sweep (docs/bench-results/amqp-raw-sweep.txt)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tasks="${TASKS:-20000}"
out="$root/docs/bench-results/chart"
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.jsonl
cd "$root"
cargo build -p celeriac-bench --release
for run in 1 2 3; do
  for broker in memory redis amqp; do
    target/release/celeriac-bench "$broker" --tasks "$tasks" --json "$out/$broker-$run.json"
  done
  target/release/celeriac-bench amqp --tasks "$tasks" --amqp-shards 4 --worker-runtime current \
    --json "$out/sharded-amqp-$run.json"
done
if [[ -n "${RAW_SWEEP:-}" ]]; then
  bench/amqp-raw-sweep.sh | tee "$root/docs/bench-results/amqp-raw-sweep.txt"
fi
bench/celery/run.sh --tasks "$tasks" | grep '^{' | tee "$out/celery-prefork.jsonl"
bench/celery/run.sh --tasks "$tasks" --pool gevent --concurrency 64 | grep '^{' | tee "$out/celery-gevent.jsonl"
(
  cd bench/peers
  cargo build --release
  for broker in redis amqp; do
    target/release/celeriac-peers-bench rusty-celery "$broker" "$tasks"
  done
  # apalis-redis 1.0 cannot promote more than ~8 000 queued tasks at once (see docs/benchmarks.md):
  # the chart marks its bar with the smaller N.
  target/release/celeriac-peers-bench apalis redis "$((tasks < 5000 ? tasks : 5000))"
  target/release/celeriac-peers-bench apalis amqp "$tasks"
) | grep '^{' | tee "$out/peers.jsonl"
python3 bench/chart.py
