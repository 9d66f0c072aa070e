"""Sends the SMS task from Python as the shop's Django views do, for celeriac's interop tests.

    python send.py CALLS_JSON

CALLS_JSON is a list of calls: {"args": [...], "kwargs": {...}, "options": {...}}, each sent with
`ccp_send_sms_code.apply_async(args, kwargs, **options)` (a call with only "args" is sent with
`.delay(*args)`, the shop's own line; one with "send_task": "<name>" by that name with
`app.send_task`, unchecked, as a producer with another signature would). A call with "get": true
then waits for its result with `AsyncResult.get(timeout=30)` (the app needs INTEROP_BACKEND_URL).

Prints one JSON line per call: {"id": …} and, for "get", "result" or "error" ("<type>: <text>").
"""

import json
import sys

from interop import app, ccp_send_sms_code

sent = []
for call in json.loads(sys.argv[1]):
    if call.get("send_task"):
        name = call["send_task"]
        if name is True:
            name = ccp_send_sms_code.name
        result = app.send_task(name, call.get("args", []), call.get("kwargs", {}))
    elif set(call) == {"args"}:
        result = ccp_send_sms_code.delay(*call["args"])
    else:
        result = ccp_send_sms_code.apply_async(
            call.get("args", []), call.get("kwargs", {}), **call.get("options", {})
        )
    sent.append((call, result))

for call, result in sent:
    line = {"id": result.id}
    if call.get("get"):
        try:
            line["result"] = result.get(timeout=30)
        except Exception as error:  # the task's failure, as Python sees it
            line["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(line), flush=True)
