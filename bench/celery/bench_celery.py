"""Python Celery on the same machine and brokers as celeriac-bench, for a side-by-side comparison.

Measures, per broker: publish rate (apply_async one by one), drain rate with one worker (prefork -c 2
by default, or gevent), enqueue-to-start latency at low load (one task at a time), and the worker's
peak RSS (all its processes). Run through run.sh, which makes the virtualenv.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import redis
from celery import Celery

REDIS_URL = os.environ.get("CELERIAC_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("CELERIAC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUN = os.environ.get("BENCH_RUN", "bench")

app = Celery("bench_celery", broker=os.environ.get("BENCH_BROKER", REDIS_URL))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    task_default_queue=f"celery-bench-{RUN}",
    broker_connection_retry_on_startup=True,
)
counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench_noop", ignore_result=True)
def bench_noop(n):
    counter.incr(f"celery-bench:{RUN}:done")


@app.task(name="bench_probe", ignore_result=True)
def bench_probe(probe_id):
    counter.set(f"celery-bench:{RUN}:probe:{probe_id}", repr(time.time()), ex=60)


def worker(pool, concurrency):
    env = dict(os.environ)
    command = [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "-l", "warning",
               "-P", pool, "-c", str(concurrency), "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-Q", app.conf.task_default_queue]
    return subprocess.Popen(command, env=env, cwd=os.path.dirname(os.path.abspath(__file__)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree_rss(process):
    try:
        parent = psutil.Process(process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    except psutil.Error:
        return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("broker", choices=["redis", "amqp"])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    done_key = f"celery-bench:{RUN}:done"
    counter.delete(done_key)

    started = time.perf_counter()
    for n in range(args.tasks):
        bench_noop.apply_async((n,))
    publish = args.tasks / (time.perf_counter() - started)

    process = worker(args.pool, args.concurrency)
    peak = 0
    try:
        # Drain: from worker start until every task ran.
        started = time.perf_counter()
        while int(counter.get(done_key) or 0) < args.tasks:
            peak = max(peak, tree_rss(process))
            time.sleep(0.01)
            if time.perf_counter() - started > 600:
                raise SystemExit("drain did not finish in 10 minutes")
        drain = args.tasks / (time.perf_counter() - started)

        latencies = []
        for _ in range(args.latency_samples):
            probe_id = uuid.uuid4().hex
            sent = time.time()
            bench_probe.apply_async((probe_id,))
            key = f"celery-bench:{RUN}:probe:{probe_id}"
            deadline = time.perf_counter() + 10
            while (value := counter.get(key)) is None:
                if time.perf_counter() > deadline:
                    raise SystemExit("a probe did not start within 10 s")
                time.sleep(0.0002)
            latencies.append((float(value) - sent) * 1000)
            peak = max(peak, tree_rss(process))
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    latencies.sort()
    pick = lambda q: latencies[round((len(latencies) - 1) * q)]
    result = {
        "system": f"python-celery-{args.pool}-c{args.concurrency}",
        "broker": args.broker,
        "tasks": args.tasks,
        "publish_per_sec": round(publish),
        "drain_per_sec": round(drain),
        "latency_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": latencies[-1]},
        "worker_peak_rss_mib": round(peak / 2**20, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
