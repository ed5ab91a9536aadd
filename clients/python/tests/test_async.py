"""The asyncio client and worker: round trips, errors, once() sharing one wait among
coroutines, and an async worker with checkpoints, progress, outcomes and close()."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import httpx
import pytest

from drove_client import (
    AsyncDrove,
    AsyncJobContext,
    Invalid,
    JobFailed,
    KeyConflict,
    NotFound,
    Permanent,
    Snooze,
    WaitTimeout,
    WorkerClosed,
)

from conftest import LONG, Server


async def test_round_trips_and_errors(server: Server) -> None:
    async with AsyncDrove(server.url) as drove:
        job = await drove.submit("a-rt", {"n": 1}, key="k")
        assert job["state"] == "queued" and job["deduplicated"] is False
        assert (await drove.submit("a-rt", {"n": 2}, key="k"))["id"] == job["id"]
        with pytest.raises(KeyConflict):
            await drove.submit("a-rt", None, key="k", on_conflict="reject")
        assert (await drove.get(job["id"]))["payload"] == {"n": 1}
        batch = await drove.submit_many([{"queue": "a-rt", "payload": i} for i in range(3)])
        assert [j["payload"] for j in batch] == [0, 1, 2]
        assert len((await drove.list(queue="a-rt"))["jobs"]) == 4
        assert (await drove.cancel(batch[0]["id"]))["state"] == "cancelled"
        assert (await drove.retry(batch[0]["id"]))["attempt"] == 0
        q = await drove.set_queue("a-rt", concurrency=3, backoff={"base_ms": 10, "max_ms": 20})
        assert q["config"]["concurrency"] == 3
        assert (await drove.queue("a-rt"))["counts"]["queued"] == 4
        assert any(x["name"] == "a-rt" for x in await drove.queues())
        assert (await drove.set_pool("a-pool", concurrency=2))["config"]["concurrency"] == 2
        assert (await drove.pool("a-pool"))["name"] == "a-pool"
        with pytest.raises(Invalid) as bad:
            await drove.submit("a-rt", None, priority="high")  # type: ignore[arg-type]
        assert bad.value.field == "priority"
        with pytest.raises(NotFound):
            await drove.get("nope")
        with pytest.raises(WaitTimeout):
            await drove.submit_and_wait("a-rt-idle", None, wait_ms=100)


async def test_once_shares_one_wait_among_coroutines(server: Server) -> None:
    posts: List[str] = []

    async def count(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/jobs":
            posts.append(str(request.url))

    runs: List[str] = []
    gate = asyncio.Event()

    async def report(ctx: AsyncJobContext) -> Any:
        runs.append(ctx.id)
        await asyncio.wait_for(gate.wait(), LONG)
        return {"report": ctx.payload, "job": ctx.id}

    async with AsyncDrove(server.url, http_client=httpx.AsyncClient(event_hooks={"request": [count]})) as drove:
        async with drove.worker("a-once", report, concurrency=2):
            calls = [asyncio.ensure_future(drove.once("a-once", "r:1", {"r": 1}, reuse_for_ms=60_000)) for _ in range(50)]
            while not runs:  # the job starts once the shared submit reached the server
                await asyncio.sleep(0.01)
            assert drove._flights[("a-once", "r:1", 60_000)].callers == 50
            gate.set()
            answers = await asyncio.wait_for(asyncio.gather(*calls), LONG)
            assert len(runs) == 1 and all(a == answers[0] for a in answers)
            assert len(posts) == 1, f"50 concurrent once() calls sent {len(posts)} submits"
            # A caller that gives up (cancelled) does not end the wait for the others.
            first = asyncio.ensure_future(drove.once("a-once", "r:2", {"r": 2}))
            second = asyncio.ensure_future(drove.once("a-once", "r:2", {"r": 2}))
            while len(runs) < 2:
                await asyncio.sleep(0.01)
            first.cancel()
            assert (await asyncio.wait_for(second, LONG))["job"] == runs[1]


async def test_async_worker_checkpoints_outcomes_and_close(server: Server) -> None:
    seen: Dict[str, Any] = {}
    stuck_started = asyncio.Event()
    reasons: List[Any] = []

    async def handler(ctx: AsyncJobContext) -> Any:
        mode = ctx.payload["mode"]
        if mode == "pages":
            start = (ctx.checkpoint or {}).get("next", 0)
            for page in range(start, 5):
                ctx.progress(page + 1, 5, f"page {page + 1}")
                await ctx.save_checkpoint({"next": page + 1})
            return {"pages": 5}
        if mode == "snooze" and ctx.payload.get("once") and ctx.id not in seen:
            seen[ctx.id] = True
            raise Snooze(10)
        if mode == "permanent":
            raise Permanent("nope")
        if mode == "stuck":
            stuck_started.set()
            try:
                await ctx.sleep(LONG)
            except WorkerClosed as err:
                reasons.append(err)
                raise
            except asyncio.CancelledError:
                reasons.append("task cancelled")
                raise
        return mode

    async with AsyncDrove(server.url) as drove:
        await drove.set_queue("a-work", backoff={"base_ms": 0, "max_ms": 0})
        worker = drove.worker("a-work", handler, concurrency=3, progress_interval_ms=0)
        try:
            assert await drove.submit_and_wait("a-work", {"mode": "pages"}, wait_ms=int(LONG * 1000)) == {"pages": 5}
            assert await drove.submit_and_wait("a-work", {"mode": "snooze", "once": True}, wait_ms=int(LONG * 1000)) == "snooze"
            with pytest.raises(JobFailed) as failed:
                await drove.submit_and_wait("a-work", {"mode": "permanent"}, wait_ms=int(LONG * 1000))
            assert failed.value.kind == "permanent"
            stuck = await drove.submit("a-work", {"mode": "stuck"})
            await asyncio.wait_for(stuck_started.wait(), LONG)
        finally:
            await worker.close(grace_ms=200)
        # Past its grace the stuck handler was told (ctx.sleep raised WorkerClosed) and the
        # job was handed back.
        assert reasons and (isinstance(reasons[0], WorkerClosed) or reasons[0] == "task cancelled")
        back = await drove.get(stuck["id"])
        assert back["state"] == "queued" and back["attempt"] == 1
        await drove.cancel(stuck["id"])


async def test_async_worker_runs_sync_handlers_in_threads(server: Server) -> None:
    import threading

    main = threading.get_ident()
    threads: List[int] = []

    def handler(ctx: Any) -> Any:
        threads.append(threading.get_ident())
        ctx.save_checkpoint({"sync": True})  # blocks this thread, not the loop
        return "ok"

    async with AsyncDrove(server.url) as drove:
        async with drove.worker("a-sync", handler):
            assert await drove.submit_and_wait("a-sync", None, wait_ms=int(LONG * 1000)) == "ok"
    assert threads and threads[0] != main
