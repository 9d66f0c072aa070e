"""The Python side of celeriac's Celery interop tests: the shop's SMS task as its Django project
defines it, on the broker and queue the Rust test names in the environment.

    INTEROP_BROKER_URL  redis://127.0.0.1:6379/0 (or amqp://…)
    INTEROP_RECORD_URL  the Redis where runs are recorded (unset: INTEROP_BROKER_URL)
    INTEROP_QUEUE       the queue to send to and consume from
    INTEROP_PREFIX      kombu's global_keyprefix (may be empty)
    INTEROP_BACKEND_URL Celery's result backend (unset: none)
    INTEROP_VISIBILITY  kombu's visibility_timeout in seconds; also restores every second
    INTEROP_QUEUE_TYPE  Celery's task_default_queue_type ("quorum" on RabbitMQ; unset: classic)
    INTEROP_EXCHANGE_TYPE  routes the queue through an exchange `<queue>_<type>` of this type
                        (e.g. "topic", with which Celery uses native delayed delivery on quorum
                        queues); unset: Celery's default direct exchange named like the queue

The task records each run by RPUSHing JSON onto the Redis list `celeriac-test-interop-ran:<queue>`.
"""

import json
import os
import time

import redis
from celery import Celery
from kombu import Exchange, Queue

BROKER_URL = os.environ.get("INTEROP_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("INTEROP_QUEUE", "celery")
PREFIX = os.environ.get("INTEROP_PREFIX", "")

app = Celery("interop", broker=BROKER_URL, backend=os.environ.get("INTEROP_BACKEND_URL"))
app.conf.task_default_queue = QUEUE
if os.environ.get("INTEROP_QUEUE_TYPE"):
    app.conf.task_default_queue_type = os.environ["INTEROP_QUEUE_TYPE"]
if os.environ.get("INTEROP_EXCHANGE_TYPE"):
    _kind = os.environ["INTEROP_EXCHANGE_TYPE"]
    _type = os.environ.get("INTEROP_QUEUE_TYPE")
    app.conf.task_queues = [
        Queue(
            QUEUE,
            Exchange(f"{QUEUE}_{_kind}", type=_kind),
            routing_key=QUEUE,
            queue_arguments={"x-queue-type": _type} if _type else None,
        )
    ]
app.conf.broker_transport_options = {"global_keyprefix": PREFIX} if PREFIX else {}
if os.environ.get("INTEROP_VISIBILITY"):
    app.conf.broker_transport_options.update(
        visibility_timeout=float(os.environ["INTEROP_VISIBILITY"]),
        unacked_restore_interval=1,
        unacked_restore_throttle=1,
    )
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True

_runs = redis.Redis.from_url(os.environ.get("INTEROP_RECORD_URL", BROKER_URL))


@app.task(bind=True, name="ccp_send_sms_code", retry_backoff=3, max_retries=3)
def ccp_send_sms_code(self, mobile, sms_code):
    """Records the call instead of sending an SMS; returns 0 as the shop's task does. Fails (as a
    gateway would) for the number "0"; hangs for a minute, after recording, for the code "hang"."""
    if mobile == "0":
        raise ValueError("no such number: 0")
    _runs.rpush(
        "celeriac-test-interop-ran:" + QUEUE,
        json.dumps(
            {
                "mobile": mobile,
                "sms_code": sms_code,
                "id": self.request.id,
                "retries": self.request.retries,
            }
        ),
    )
    if sms_code == "hang":
        time.sleep(60)
    return 0


@app.task(name="tasks.add")
def add(x, y):
    """For workflows: a sum."""
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    """For workflows: a product."""
    return x * y


@app.task(name="tasks.xsum")
def xsum(numbers):
    """For chords: the sum of the members' results."""
    return sum(numbers)


@app.task(name="tasks.note_failure")
def note_failure(task_id):
    """For workflows: an error callback, given the failed task's id."""
    return task_id
