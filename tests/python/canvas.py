"""Builds Celery workflows in Python for celeriac's interop tests and waits for their results.

    python canvas.py chain        chain(add.s(1, 2), mul.s(10), add.si(100, 1)), all on INTEROP_QUEUE
    python canvas.py link         add.apply_async((1, 2), link=mul.s(3)) on INTEROP_QUEUE
    python canvas.py errback      add.apply_async((1, "x"), link_error=note_failure.s()) on
                                  INTEROP_QUEUE: the Rust add refuses "x"
    python canvas.py group        group(add.s(i, i) for i in range(5)) on INTEROP_QUEUE
    python canvas.py handover     chain(add.s(2, 3), mul.s(10), add.si(100, 1)), its first step
                                  on INTEROP_QUEUE and the others on INTEROP_PY_QUEUE
    python canvas.py chord        chord(add.s(i, i) for i in range(4))(xsum.s()) on INTEROP_QUEUE
    python canvas.py chord_fail   chord([add.s(1, 1), add.s(1, "x")])(xsum.s()) on INTEROP_QUEUE:
                                  the Rust add refuses "x"
    python canvas.py chord_mixed  chord(add.s(i, 100) for i in range(6))(xsum.s()), the members
                                  alternately on INTEROP_QUEUE and INTEROP_PY_QUEUE, the callback
                                  on INTEROP_PY_QUEUE
    python canvas.py result       AsyncResult(INTEROP_RESULT_ID).get(timeout=30): a result a Rust
                                  app waits for too
    python canvas.py group_saved  group(add.s(i, i) for i in range(5)) on INTEROP_QUEUE, saved
                                  (GroupResult.save()) for Rust to restore
    python canvas.py restore      GroupResult.restore(INTEROP_GROUP_ID).get(timeout=30): a group
                                  Rust saved

Prints one JSON line: the results it waited for.
"""

import json
import os
import sys

from celery import chain, chord, group

from interop import add, app, mul, note_failure, xsum

what = sys.argv[1]
if what == "chain":
    last = chain(add.s(1, 2), mul.s(10), add.si(100, 1)).apply_async()
    out = {"last": last.get(timeout=30), "mul": last.parent.get(timeout=30)}
elif what == "link":
    first = add.apply_async((1, 2), link=mul.s(3))
    out = {"add": first.get(timeout=30)}
elif what == "group":
    members = group(add.s(i, i) for i in range(5)).apply_async()
    out = {"results": members.get(timeout=30)}
elif what == "errback":
    failing = add.apply_async((1, "x"), link_error=note_failure.s())
    try:
        failing.get(timeout=30)
        out = {"id": failing.id, "error": None}
    except Exception as error:  # the task's failure, as Python sees it
        out = {"id": failing.id, "error": f"{type(error).__name__}: {error}"}
elif what == "handover":
    python_queue = os.environ["INTEROP_PY_QUEUE"]
    last = chain(
        add.s(2, 3),
        mul.s(10).set(queue=python_queue),
        add.si(100, 1).set(queue=python_queue),
    ).apply_async()
    out = {"last": last.get(timeout=30), "mul": last.parent.get(timeout=30)}
elif what == "chord":
    result = chord(add.s(i, i) for i in range(4))(xsum.s())
    out = {"sum": result.get(timeout=30), "id": result.id}
elif what == "chord_fail":
    result = chord([add.s(1, 1), add.s(1, "x")])(xsum.s())
    try:
        out = {"sum": result.get(timeout=30)}
    except Exception as error:  # the chord's failure, as Python sees it
        out = {"error": f"{type(error).__name__}: {error}", "id": result.id}
elif what == "chord_mixed":
    python_queue = os.environ["INTEROP_PY_QUEUE"]
    header = [
        add.s(i, 100).set(queue=python_queue) if i % 2 else add.s(i, 100) for i in range(6)
    ]
    result = chord(header)(xsum.s().set(queue=python_queue))
    out = {"sum": result.get(timeout=30)}
elif what == "group_saved":
    members = group(add.s(i, i) for i in range(5)).apply_async()
    members.save()
    out = {
        "id": members.id,
        "ids": [member.id for member in members.results],
        "results": members.get(timeout=30),
    }
elif what == "restore":
    restored = app.GroupResult.restore(os.environ["INTEROP_GROUP_ID"])
    out = {"results": None if restored is None else restored.get(timeout=30)}
elif what == "result":
    out = {"result": app.AsyncResult(os.environ["INTEROP_RESULT_ID"]).get(timeout=30)}
else:
    sys.exit(f"unknown workflow {what}")
print(json.dumps(out), flush=True)
