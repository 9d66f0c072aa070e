"""Python Celery's result round trip, for celeriac-bench's `results` command: one `add.delay(n, 1)`
then `.get()` at a time against an idle worker, with the Redis result backend, as celeriac's
`delay(...).await?.get().await` is measured. Prints one JSON line. Run through results.sh, which
makes the virtualenv.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery

REDIS_URL = os.environ.get("CELERIAC_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = os.environ.get("BENCH_RUN", "bench")

app = Celery("bench_celery_results", broker=os.environ.get("BENCH_BROKER", REDIS_URL),
             backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_default_queue=f"celery-bench-results-{RUN}",
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench_add")
def bench_add(a, b):
    return a + b


def worker(pool, concurrency):
    command = [sys.executable, "-m", "celery", "-A", "bench_celery_results", "worker", "-l",
               "warning", "-P", pool, "-c", str(concurrency), "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-Q", app.conf.task_default_queue]
    return subprocess.Popen(command, env=dict(os.environ),
                            cwd=os.path.dirname(os.path.abspath(__file__)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    process = worker(args.pool, args.concurrency)
    try:
        # Warm up: the first get waits for the worker to start.
        bench_add.delay(0, 0).get(timeout=60)
        millis = []
        for n in range(args.samples):
            sent = time.perf_counter()
            assert bench_add.delay(n, 1).get(timeout=10) == n + 1
            millis.append((time.perf_counter() - sent) * 1000)
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    millis.sort()
    pick = lambda q: millis[round((len(millis) - 1) * q)]
    print(json.dumps({
        "system": f"python-celery-{args.pool}-c{args.concurrency}",
        "samples": args.samples,
        "round_trip_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": millis[-1]},
    }))


if __name__ == "__main__":
    main()
