"""P1 (docs/PROBLEMS.md, "Same key, same work"): many concurrent once() calls for one key,
from threads of this process and from separate Python processes, run one job and all get its
result; concurrent calls in one process share one HTTP wait; a recent success is reused for
reuse_for_ms."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import httpx

from drove_client import Drove

from conftest import LONG, TESTS_DIR, LineProcess, Server, until, wait_event


def test_one_key_from_threads_and_processes_runs_one_job(server: Server) -> None:
    drove = server.drove
    executions: List[str] = []
    started = threading.Event()
    gate = threading.Event()

    def handler(ctx: Any) -> Any:
        executions.append(ctx.id)
        started.set()
        gate.wait(LONG)  # the expensive report, held until every caller is waiting
        return {"report": ctx.payload, "job": ctx.id, "pid": os.getpid()}

    posts: List[str] = []

    def count(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/jobs":
            posts.append(str(request.url))

    local = Drove(server.url, http_client=httpx.Client(event_hooks={"request": [count]}))
    worker = drove.worker("p1", handler, concurrency=4)
    procs = [LineProcess(TESTS_DIR / "fixtures" / "once_caller.py", [server.url, "p1", "report:7", "20", "60000"]) for _ in range(3)]
    answers: List[Any] = []
    lock = threading.Lock()

    def call() -> None:
        answer = local.once("p1", "report:7", {"customer": "report:7"}, reuse_for_ms=60_000)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=call) for _ in range(40)]
    try:
        for t in threads:
            t.start()
        until(lambda: (f := local._flights.get(("p1", "report:7", 60_000))) is not None and f.callers == 40, "40 threads to share one wait")
        for p in procs:
            p.next(lambda l: l.get("event") == "ready", "a caller process to be ready")
        wait_event(started, "the job to start")
        gate.set()
        for t in threads:
            t.join(LONG)
        done = [p.next(lambda l: l.get("event") == "done", "a caller process to finish") for p in procs]
    finally:
        gate.set()
        for p in procs:
            p.close()
        worker.close()

    assert len(executions) == 1, f"the report ran {len(executions)} times"
    assert len(answers) == 40 and all(a == answers[0] for a in answers)
    assert answers[0]["job"] == executions[0]
    assert len(posts) == 1, f"40 concurrent calls in one process sent {len(posts)} submits"
    for d in done:
        assert d["errors"] == [] and len(d["answers"]) == 20
        assert all(a == answers[0] for a in d["answers"]), "a process got another job's result"
        assert d["posts"] == 1, f"20 threads of a process sent {d['posts']} submits"
    assert drove.queue("p1")["counts"]["succeeded"] == 1

    # Within reuse_for_ms the success is reused, like a cache; with 0 the key computes again.
    assert local.once("p1", "report:7", {"customer": "report:7"}, reuse_for_ms=60_000) == answers[0]
    assert len(executions) == 1
    with drove.worker("p1", handler):
        fresh = local.once("p1", "report:7", {"customer": "report:7"}, reuse_for_ms=0)
    assert fresh["job"] != answers[0]["job"] and len(executions) == 2
    local.close()


def test_500_calls_over_10_keys_run_10_computations(server: Server) -> None:
    drove = server.drove
    executions: Dict[int, int] = {}
    lock = threading.Lock()

    def handler(ctx: Any) -> Any:
        item = ctx.payload["item"]
        with lock:
            executions[item] = executions.get(item, 0) + 1
        ctx.sleep(0.3)  # the expensive computation
        return {"item": item, "job": ctx.id}

    def call(i: int) -> Any:
        item = i % 10
        # Cached for a minute, as a web service would: callers that arrive after their key's
        # job succeeded reuse it rather than compute again.
        return item, drove.once("p1-slam", f"item:{item}", {"item": item}, reuse_for_ms=60_000)

    with drove.worker("p1-slam", handler, concurrency=16):
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(call, range(500)))
    assert sum(executions.values()) == 10 and all(n == 1 for n in executions.values()), executions
    job_of: Dict[int, str] = {}
    for asked, answer in results:
        assert answer["item"] == asked, "a caller got another key's result"
        assert job_of.setdefault(asked, answer["job"]) == answer["job"]
    assert len(job_of) == 10
    assert drove.queue("p1-slam")["counts"]["succeeded"] == 10
