"""Riding out a server outage: the server is SIGKILLed while a worker holds 8 jobs (one of
them waiting for a checkpoint to be stored) and comes back ~5 s later on the same port and
database. Leases are 3 s, so they run out during the outage: the pending checkpoint settles
(LeaseLost), every handler is told, and when the server answers again the worker resumes by
itself; every job ends succeeded, the export from its checkpoint. During the outage the worker
sends a few requests per second at most, however many jobs it holds."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

from drove_client import Drove, LeaseLost

from conftest import LONG, Server, wait_event

HOLDERS = 7
PAGES = 12
OUTAGE_S = 5.0


@pytest.fixture()
def fresh_server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.stop()


def test_a_worker_rides_out_a_server_outage(fresh_server: Server) -> None:
    server = fresh_server
    drove = server.drove
    drove.set_queue("outage", lease_ms=3000, backoff={"base_ms": 0, "max_ms": 0})

    requests: List[Tuple[float, str, str]] = []

    async def count(request: httpx.Request) -> None:
        requests.append((time.monotonic(), request.method, request.url.path))

    reached = threading.Event()  # the export stored the checkpoint of page 5
    killed = threading.Event()  # the server is dead
    holders_started = threading.Semaphore(0)
    settled: List[BaseException] = []
    told: List[Any] = []
    written: List[Tuple[int, int]] = []  # (page, attempt)
    starts: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def handler(ctx: Any) -> Any:
        if ctx.payload["kind"] == "holder":
            if ctx.attempt == 1:
                holders_started.release()
                ctx.cancelled.wait(LONG)  # holds its slot until told the lease is gone
                with lock:
                    told.append(ctx.cancel_reason)
                ctx.raise_if_cancelled()
            return "held"
        start = (ctx.checkpoint or {}).get("next", 0)
        with lock:
            starts.append({"attempt": ctx.attempt, "from": start})
        for page in range(start, PAGES):
            with lock:
                written.append((page, ctx.attempt))
            if ctx.attempt == 1 and page == 5:
                reached.set()
                killed.wait(LONG)
                try:
                    ctx.save_checkpoint({"next": page + 1})  # pending: the server is down
                except BaseException as err:
                    with lock:
                        settled.append(err)
                    raise
                raise AssertionError("a checkpoint was stored while the server was down")
            ctx.save_checkpoint({"next": page + 1})
        return {"pages": PAGES}

    # The worker's requests are counted on their way out (an httpx event hook).
    counted = Drove(server.url, worker_http_client=lambda: httpx.AsyncClient(event_hooks={"request": [count]}))
    events: List[Any] = []
    worker = counted.worker("outage", handler, concurrency=1 + HOLDERS, on_event=lambda e: e.type in ("offline", "online") and events.append(e))
    try:
        holders = [drove.submit("outage", {"kind": "holder", "n": i}) for i in range(HOLDERS)]
        export = drove.submit("outage", {"kind": "export"})
        for _ in range(HOLDERS):
            assert holders_started.acquire(timeout=LONG), "the holders to start"
        wait_event(reached, "the export to reach page 5")

        server.kill()
        killed.set()
        down_at = time.monotonic()
        # The outage itself (what is being tested, not a wait for something to happen).
        time.sleep(OUTAGE_S)
        up_at = time.monotonic()
        during = [r for r in requests if down_at <= r[0] < up_at]
        server.start()  # same port, same database

        done = drove.get(export["id"], wait_ms=int(LONG * 1000))
        assert done["state"] == "succeeded", done
        assert done["result"] == {"pages": PAGES}
        for h in holders:
            assert drove.get(h["id"], wait_ms=int(LONG * 1000))["state"] == "succeeded"
    finally:
        worker.close(grace_ms=1000)

    # The checkpoint pending at the kill settled: the lease ran out with no heartbeat answered.
    assert len(settled) == 1 and isinstance(settled[0], LeaseLost), settled
    # Every holder was told its lease was gone, and its slot came back.
    assert len(told) == HOLDERS and all(isinstance(r, LeaseLost) for r in told), told
    # The export resumed from its last stored checkpoint: page 5 is the only page done twice.
    assert starts[0] == {"attempt": 1, "from": 0}
    assert starts[-1]["from"] == 5 and starts[-1]["attempt"] >= 2, starts
    pages = sorted(p for p, _ in written)
    assert sorted(set(pages)) == list(range(PAGES))
    assert [p for p in set(pages) if pages.count(p) > 1] == [5]
    # One outage, told once: offline, then online.
    assert [e.type for e in events] == ["offline", "online"], events
    assert events[1].ms is not None and events[1].ms >= OUTAGE_S * 1000 * 0.9
    # A few requests per second at most during the outage, though 8 jobs were held.
    per_second = len(during) / OUTAGE_S
    assert len(during) <= 4 * OUTAGE_S, f"{len(during)} requests during a {OUTAGE_S} s outage: {during}"
    print(f"outage: {len(during)} requests in {OUTAGE_S} s ({per_second:.1f}/s) while holding {1 + HOLDERS} jobs")
