"""Asks one worker over Celery's remote control (kombu's pidbox), as `celery inspect` and
`celery control` do, for celeriac's interop tests.

    python remote_control.py HOSTNAME METHOD...

Each METHOD is an inspect method (`ping`, `stats`, `registered`, …), or `revoke:<task id>` or
`rate_limit:<task name>:<rate>`, sent with `reply=True`. Prints one JSON object: {METHOD: what
it returned}; inspect methods return {hostname: reply}, or null when nobody answered.
"""

import json
import sys

from interop import app

hostname, methods = sys.argv[1], sys.argv[2:]
inspect = app.control.inspect(destination=[hostname], timeout=3.0)
answers = {}
for method in methods:
    name, _, argument = method.partition(":")
    if name == "revoke":
        answers[method] = app.control.revoke(
            argument, destination=[hostname], reply=True, timeout=3.0
        )
    elif name == "rate_limit":
        task, rate = argument.split(":")
        answers[method] = app.control.rate_limit(
            task, rate, destination=[hostname], reply=True, timeout=3.0
        )
    else:
        answers[method] = getattr(inspect, name)()
print(json.dumps(answers))
