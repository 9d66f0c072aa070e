#!/usr/bin/env bash
# What raw lapin alone achieves against this machine's RabbitMQ in several shapes: the evidence for
# which throughput targets any client can reach here. Usage: bench/amqp-raw-sweep.sh [repeats]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="${1:-2}"
cargo build -q -p celeriac-bench --release
bin=target/release/celeriac-bench
shapes=(
  "--tasks 20000"
  ""
  "--channels 4"
  "--queue-version 2"
  "--prefetch 1024"
  "--transient"
  "--channels 4 --queues 4"
  "--channels 4 --queues 4 --prefetch 1024 --queue-version 2 --transient"
)
for shape in "${shapes[@]}"; do
  for _ in $(seq "$repeats"); do
    # shellcheck disable=SC2086
    "$bin" amqp-raw $shape
  done
done
