#!/usr/bin/env bash
# The whole comparison in one go, on this machine's brokers: celeriac (memory, Redis, RabbitMQ; three
# runs each, and RabbitMQ sharded), the raw lapin sweep, Python Celery (prefork -c 2 and gevent -c 64, both brokers) and the Rust peers
# (rusty-celery and apalis, both brokers). Results go to docs/bench-results/, the chart is redrawn.
# Takes about 30 minutes; start the brokers first (scripts/test.sh does).
#
#   bench/run-all.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/docs/bench-results"
cd "$root"
cargo build -p celeriac-bench --release
for broker in memory redis amqp; do
  for run in 1 2 3; do
    target/release/celeriac-bench "$broker" --json "$out/$broker-$run.json"
  done
done
for run in 1 2 3; do
  target/release/celeriac-bench amqp --amqp-shards 4 --worker-runtime current \
    --json "$out/sharded-amqp-$run.json"
done
bench/amqp-raw-sweep.sh | tee "$out/amqp-raw-sweep.txt"
bench/celery/run.sh --tasks 20000 | grep '^{' | tee "$out/celery-prefork.jsonl"
bench/celery/run.sh --tasks 20000 --pool gevent --concurrency 64 | grep '^{' | tee "$out/celery-gevent.jsonl"
(
  cd bench/peers
  cargo build --release
  for broker in redis amqp; do
    target/release/celeriac-peers-bench rusty-celery "$broker" 20000
  done
  # apalis-redis 1.0 cannot promote more than ~8 000 queued tasks at once (see docs/benchmarks.md).
  target/release/celeriac-peers-bench apalis redis 5000
  target/release/celeriac-peers-bench apalis amqp 20000
) | grep '^{' | tee "$out/peers.jsonl"
python3 bench/chart.py
