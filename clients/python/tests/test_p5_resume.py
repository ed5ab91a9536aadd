"""P5 (docs/PROBLEMS.md, "Long-running, resumable work"): a worker process running a paged
export is SIGKILLed, twice; each new worker process resumes from the last checkpoint; the job
completes; no page before a checkpoint is done again, and every page is written."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from conftest import LONG, TESTS_DIR, LineProcess, Server

PAGES = 60


def start_worker(server: Server, log: str) -> LineProcess:
    return LineProcess(TESTS_DIR / "fixtures" / "paged_worker.py", env={"DROVE_URL": server.url, "PAGES_LOG": log})


def test_a_sigkilled_worker_process_resumes_from_its_checkpoint(server: Server) -> None:
    drove = server.drove
    # A dead worker's lease runs out after 1 s, and the job is queued again at once.
    drove.set_queue("export", lease_ms=1000, backoff={"base_ms": 0, "max_ms": 0})
    log = os.path.join(server.dir, "pages.log")
    job = drove.submit("export", {"pages": PAGES})

    starts: List[Dict[str, Any]] = []
    acked: List[int] = []  # per killed run: the last checkpoint it saw stored
    worker = start_worker(server, log)
    try:
        for i, at in enumerate([15, 35]):
            starts.append(worker.next(lambda l: l.get("event") == "start", f"run {i + 1} to start"))
            last = worker.next(lambda l, at=at: l.get("event") == "checkpoint" and l["next"] >= at, f"run {i + 1} to reach page {at}")
            worker.kill()
            acked.append(max([last["next"]] + [l["next"] for l in worker.lines if l.get("event") == "checkpoint"]))
            seen = drove.get(job["id"])
            assert seen["progress"] and seen["progress"]["done"] >= last["next"], f"progress {seen['progress']} lags checkpoint {last['next']}"
            worker.close()
            worker = start_worker(server, log)
        starts.append(worker.next(lambda l: l.get("event") == "start", "the last run to start"))
        done = drove.get(job["id"], wait_ms=int(LONG * 1000))
        assert done["state"] == "succeeded", done
        assert done["result"] == {"pages": PAGES}
        assert done["progress"] == {"done": PAGES, "total": PAGES, "message": f"page {PAGES} of {PAGES}"}
    finally:
        worker.close()

    # Each new run resumed from at least the last checkpoint the killed run saw stored.
    assert starts[0]["from"] == 0
    for i in range(1, len(starts)):
        assert starts[i]["from"] >= acked[i - 1], f"run {i + 1} resumed at page {starts[i]['from']}, but page {acked[i - 1]} was checkpointed"
        assert starts[i]["attempt"] > starts[i - 1]["attempt"], "a lost lease uses an attempt"
    with open(log, encoding="utf-8") as f:
        pages = [json.loads(line) for line in f.read().split("\n") if line]
    count: Dict[int, int] = {}
    for p in pages:
        count[p["page"]] = count.get(p["page"], 0) + 1
    assert sorted(count) == list(range(PAGES)), "every page is written"
    # A page done twice can only be the one in flight at a kill (written but not yet
    # checkpointed), which the next run starts from: at most one page per kill.
    redone = sorted(p for p, n in count.items() if n > 1)
    resumed_at = [s["from"] for s in starts[1:]]
    assert all(p in resumed_at and count[p] == 2 for p in redone), f"pages done twice: {redone}, runs resumed at {resumed_at}"
    assert len(redone) <= len(resumed_at)
    for s in starts:
        mine = [p["page"] for p in pages if p["pid"] == s["pid"]]
        assert all(p >= s["from"] for p in mine), f"a run did a page before its checkpoint {s['from']}"
