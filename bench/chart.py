#!/usr/bin/env python3
"""Draws docs/benchmarks.svg from the JSON results in docs/bench-results/ (no dependencies).

    python3 bench/chart.py            # after saving new runs with `celeriac-bench … --json FILE`

Bars: drain throughput (tasks/s, log scale) of celeriac per broker (median of its runs), of Python
Celery from bench/celery/run.sh, and of the Rust peers from bench/peers.
"""
import glob
import json
import math
import os
import statistics

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(ROOT, "docs", "bench-results")


def celeriac(broker):
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(RESULTS, f"{broker}-*.json")))]
    return statistics.median(r["drain_per_sec"] for r in runs) if runs else None


def celery(pool):
    rows = {}
    for path in glob.glob(os.path.join(RESULTS, f"celery-{pool}.jsonl")):
        for line in open(path):
            row = json.loads(line)
            rows[row["broker"]] = row["drain_per_sec"]
    return rows


def main():
    bars = [
        ("celeriac · memory", celeriac("memory"), "#2b7a4b"),
        ("celeriac · Redis", celeriac("redis"), "#2b7a4b"),
        ("celeriac · RabbitMQ", celeriac("amqp"), "#2b7a4b"),
    ]
    for pool, colour in [("prefork", "#a05a2c"), ("gevent", "#c8874f")]:
        rows = celery(pool)
        for broker, name in [("redis", "Redis"), ("amqp", "RabbitMQ")]:
            if broker in rows:
                bars.append((f"Celery {pool} · {name}", rows[broker], colour))
    peers = os.path.join(RESULTS, "peers.jsonl")
    if os.path.exists(peers):
        for line in open(peers):
            row = json.loads(line)
            name = {"redis": "Redis", "amqp": "RabbitMQ"}[row["broker"]]
            bars.append((f"{row['system']} · {name}", row["drain_per_sec"], "#4f6fa0"))
    bars = [b for b in bars if b[1]]
    width, row, left, top = 760, 34, 210, 50
    height = top + row * len(bars) + 40
    top_value = 10 ** math.ceil(math.log10(max(v for _, v, _ in bars)))
    scale = lambda v: (width - left - 90) * math.log10(max(v, 1)) / math.log10(top_value)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">Drain throughput, no-op tasks, one worker (tasks/s, log scale)</text>']
    for power in range(0, int(math.log10(top_value)) + 1):
        x = left + scale(10 ** power)
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 34}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle" fill="#555">{10 ** power:,}</text>')
    for i, (name, value, colour) in enumerate(bars):
        y = top + i * row
        out.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{name}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{scale(value):.1f}" height="{row - 10}" fill="{colour}"/>')
        out.append(f'<text x="{left + scale(value) + 6:.1f}" y="{y + 18}">{value:,.0f}</text>')
    out.append("</svg>")
    path = os.path.join(ROOT, "docs", "benchmarks.svg")
    with open(path, "w") as file:
        file.write("\n".join(out) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
