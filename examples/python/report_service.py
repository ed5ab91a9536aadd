"""A small web service (Flask) whose /report?customer=ID answers an expensive report.

The report is built by a Drove job keyed by the customer, through ``drove.once()``: however
many requests ask for one customer's report at once, on however many instances of this
service, it is built once and every request gets that one result; for a minute after, requests
reuse it like a cache. The job is durable: if the instance building it dies, another worker
picks it up.

    DROVE_URL=http://127.0.0.1:7070 PORT=8000 python report_service.py
    curl 'localhost:8000/report?customer=42'

Each instance also runs a worker for the reports (WORKER=0 leaves that to other processes).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import threading
from typing import Any, Tuple

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from drove_client import Drove, DroveError, JobContext, JobFailed, WaitTimeout

QUEUE = "reports"
REPORT_MS = int(os.environ.get("REPORT_MS", "1500"))
CUSTOMER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

drove = Drove(os.environ.get("DROVE_URL", "http://127.0.0.1:7070"), token=os.environ.get("DROVE_TOKEN"))
app = Flask(__name__)


def build_report(ctx: JobContext) -> Any:
    """The expensive part (a slow query, a PDF render), run by the worker."""
    customer = ctx.payload["customer"]
    steps = 3
    for step in range(steps):
        ctx.sleep(REPORT_MS / 1000 / steps)  # stops at once if the job is cancelled
        ctx.progress(step + 1, steps, f"step {step + 1} of {steps}")
    return {
        "customer": customer,
        "orders": sum(ord(c) for c in customer) % 97,
        "job": ctx.id,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "built_by": os.getpid(),
    }


@app.get("/report")
def report() -> Tuple[Any, int]:
    customer = request.args.get("customer", "")
    if not CUSTOMER.match(customer):
        return jsonify(error="customer must be 1-64 of [A-Za-z0-9_.:-]"), 400
    try:
        answer = drove.once(QUEUE, f"report:{customer}", {"customer": customer}, reuse_for_ms=60_000, wait_ms=10_000)
    except WaitTimeout as err:
        return jsonify(error="still building the report, try again", job=err.job["id"]), 503
    except JobFailed as err:
        return jsonify(error=f"the report failed ({err.kind})"), 502
    except DroveError as err:
        return jsonify(error=f"job system: {err.message}"), 503
    return jsonify(answer), 200


def main() -> None:
    worker = None if os.environ.get("WORKER") == "0" else drove.worker(QUEUE, build_report, concurrency=4)
    server = make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), app, threaded=True)
    print(f"report service listening on http://127.0.0.1:{server.port}", flush=True)
    # Deploys send SIGTERM: stop taking requests, let reports being built finish, hand back the rest.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        if worker is not None:
            worker.close(grace_ms=10_000)
        drove.close()


if __name__ == "__main__":
    main()
