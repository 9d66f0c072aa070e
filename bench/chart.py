#!/usr/bin/env python3
"""Draws docs/benchmarks.svg from the results bench/run-all.sh leaves in docs/bench-results/chart/
(no dependencies).

    bench/run-all.sh          # runs everything on this machine, then calls this
    python3 bench/chart.py    # redraws from the saved results

Bars: drain throughput (tasks/s, log scale) of celeriac per broker (median of its runs), of Python
Celery (bench/celery/run.sh) and of the Rust peers (bench/peers), all from one run of run-all.sh on
one machine. A bar whose system drained fewer tasks than the others is marked with its N.
"""
import glob
import json
import math
import os
import statistics
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RESULTS = os.path.join(ROOT, "docs", "bench-results", "chart")

CELERIAC, CELERY, PEERS, IN_PROCESS = "#2b7a4b", "#a05a2c", "#4f6fa0", "#9cc9ad"
BROKER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ"}


def celeriac(pattern):
    """Median drain of celeriac's runs matching `pattern`, their task count and machine."""
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(RESULTS, pattern)))]
    if not runs:
        return None
    return (
        statistics.median(r["drain_per_sec"] for r in runs),
        {r["tasks"] for r in runs},
        {r["machine"] for r in runs},
    )


def lines(name):
    path = os.path.join(RESULTS, name)
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def collect():
    """(label, tasks/s, N, colour) per bar, and the machine the celeriac runs name."""
    bars, machines = [], set()
    for label, pattern, colour in [
        ("celeriac · memory (in-process, no broker)", "memory-*.json", IN_PROCESS),
        ("celeriac · Redis", "redis-*.json", CELERIAC),
        ("celeriac · RabbitMQ", "amqp-*.json", CELERIAC),
        ("celeriac · RabbitMQ, 4 shards", "sharded-amqp-*.json", CELERIAC),
    ]:
        found = celeriac(pattern)
        if found:
            value, tasks, machine = found
            machines |= machine
            bars.append((label, value, max(tasks), colour))
    for pool in ["prefork", "gevent"]:
        for row in lines(f"celery-{pool}.jsonl"):
            name = BROKER_NAMES[row["broker"]]
            bars.append((f"Celery {pool} · {name}", row["drain_per_sec"], row["tasks"], CELERY))
    for row in lines("peers.jsonl"):
        name = BROKER_NAMES[row["broker"]]
        bars.append((f"{row['system']} · {name}", row["drain_per_sec"], row["tasks"], PEERS))
    return [b for b in bars if b[1]], machines


def main():
    bars, machines = collect()
    if not bars:
        sys.exit(f"no results in {RESULTS}: run bench/run-all.sh")
    if len(machines) > 1:
        sys.exit(f"results from several machines in {RESULTS}: {sorted(machines)}")
    common = statistics.mode(n for _, _, n, _ in bars)
    machine = next(iter(machines), "this machine")

    width, row, left, top = 820, 30, 280, 70
    legend_top = top + row * len(bars) + 40
    footnotes = [b for b in bars if b[2] != common]
    height = legend_top + 30 + 18 * len(footnotes) + 10
    top_value = 10 ** math.ceil(math.log10(max(v for _, v, _, _ in bars)))
    scale = lambda v: (width - left - 90) * math.log10(max(v, 1)) / math.log10(top_value)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">Drain throughput: {common:,} no-op tasks, one worker (tasks/s, log scale)</text>',
        f'<text x="{width / 2}" y="44" text-anchor="middle" fill="#555">{machine}; brokers on the same machine; celeriac: median of 3 runs</text>',
    ]
    for power in range(0, int(math.log10(top_value)) + 1):
        x = left + scale(10**power)
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{legend_top - 34}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{legend_top - 18}" text-anchor="middle" fill="#555">{10**power:,}</text>')
    for i, (name, value, tasks, colour) in enumerate(bars):
        y = top + i * row
        mark = " *" if tasks != common else ""
        out.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{name}{mark}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{scale(value):.1f}" height="{row - 10}" fill="{colour}"/>')
        out.append(f'<text x="{left + scale(value) + 6:.1f}" y="{y + 17}">{value:,.0f}</text>')
    x = 20
    for label, colour in [
        ("celeriac", CELERIAC),
        ("celeriac, in-process memory broker (no network)", IN_PROCESS),
        ("Python Celery 5", CELERY),
        ("Rust peers", PEERS),
    ]:
        out.append(f'<rect x="{x}" y="{legend_top}" width="14" height="14" fill="{colour}"/>')
        out.append(f'<text x="{x + 20}" y="{legend_top + 12}">{label}</text>')
        x += 40 + 7 * len(label)
    for i, (name, _, tasks, _) in enumerate(footnotes):
        out.append(
            f'<text x="20" y="{legend_top + 38 + 18 * i}" fill="#555">* {name}: {tasks:,} tasks'
            f"{' (apalis-redis 1.0 fails past ≈ 8 000 queued; see docs/benchmarks.md)' if 'apalis' in name else ''}</text>"
        )
    out.append("</svg>")
    path = os.path.join(ROOT, "docs", "benchmarks.svg")
    with open(path, "w") as file:
        file.write("\n".join(out) + "\n")
    print(f"wrote {path} ({len(bars)} bars, N = {common:,}, {machine})")


if __name__ == "__main__":
    main()
