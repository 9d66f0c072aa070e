"""The shop's Django side, unchanged: `ccp_send_sms_code.delay(mobile, sms_code)`, as the seed's
views call it. The task runs on the Rust worker (`sms-verification worker --celery …`).

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 python send_sms_code.py MOBILE [SMS_CODE]

CELERY_QUEUE names the queue (default `celery`, as the worker's `--queue`).

Prints the task id. Needs Celery with Redis (`pip install "celery[redis]"`).
"""

import os
import random
import sys

from celery import Celery

celery_app = Celery(
    "meiduo", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
)
celery_app.conf.task_default_queue = os.environ.get("CELERY_QUEUE", "celery")


@celery_app.task(bind=True, name="ccp_send_sms_code", retry_backoff=3)
def ccp_send_sms_code(self, mobile, sms_code):
    """Declared so that `.delay` checks its arguments; run by the Rust worker, not here."""
    raise NotImplementedError("run by the Rust worker: sms-verification worker --celery")


if __name__ == "__main__":
    mobile = sys.argv[1]
    sms_code = sys.argv[2] if len(sys.argv) > 2 else "%06d" % random.randint(0, 999999)
    print(ccp_send_sms_code.delay(mobile, sms_code).id)
