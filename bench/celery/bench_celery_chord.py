"""Python Celery's chord of N no-ops and a summing callback, for celeriac-bench's `chord` command:
the wall time from sending the chord to the callback's result, with the Redis result backend (which
joins chords natively, without `chord_unlock` polling). Prints one JSON line. Run through chord.sh,
which makes the virtualenv.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery, chord, group

REDIS_URL = os.environ.get("CELERIAC_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = os.environ.get("BENCH_RUN", "bench")

parser = argparse.ArgumentParser()
parser.add_argument("--members", type=int, default=10000)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--broker", default=os.environ.get("BENCH_BROKER", REDIS_URL))
parser.add_argument("--pool", default="prefork")
parser.add_argument("--concurrency", type=int, default=2)
args, _ = parser.parse_known_args()

app = Celery("bench_celery_chord", broker=os.environ.get("BENCH_BROKER", args.broker),
             backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_default_queue=f"celery-bench-chord-{RUN}",
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="bench_chord_member")
def bench_chord_member(n):
    return n


@app.task(name="bench_chord_sum")
def bench_chord_sum(parts):
    return sum(parts)


def worker():
    command = [sys.executable, "-m", "celery", "-A", "bench_celery_chord", "worker", "-l",
               "warning", "-P", args.pool, "-c", str(args.concurrency), "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-Q", app.conf.task_default_queue]
    env = dict(os.environ, BENCH_BROKER=args.broker)
    return subprocess.Popen(command, env=env, cwd=os.path.dirname(os.path.abspath(__file__)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    process = worker()
    try:
        # Warm up: the first get waits for the worker to start.
        bench_chord_member.delay(0).get(timeout=60)
        seconds = []
        expected = sum(range(args.members))
        for _ in range(args.rounds):
            started = time.perf_counter()
            header = group(bench_chord_member.s(n) for n in range(args.members))
            total = chord(header)(bench_chord_sum.s()).get(timeout=3600)
            seconds.append(time.perf_counter() - started)
            assert total == expected, total
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    ordered = sorted(seconds)
    print(json.dumps({
        "system": f"python-celery-{args.pool}-c{args.concurrency}",
        "members": args.members,
        "seconds": seconds,
        "median_seconds": ordered[len(ordered) // 2],
    }))


if __name__ == "__main__":
    main()
