"""A server with a token: calls without it are Unauthorized, and a worker whose token is wrong
stops with a clear error instead of retrying for ever."""

from __future__ import annotations

import threading
from typing import Any, Iterator, List

import pytest

from drove_client import AsyncDrove, Drove, Unauthorized

from conftest import LONG, Server

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secured() -> Iterator[Server]:
    s = Server(token=TOKEN)
    try:
        yield s
    finally:
        s.stop()


def test_calls_need_the_token(secured: Server) -> None:
    with Drove(secured.url) as anonymous:
        with pytest.raises(Unauthorized) as err:
            anonymous.submit("auth", None)
    assert err.value.status == 401 and err.value.code == "unauthorized" and not err.value.transient
    assert secured.drove.submit("auth", {"ok": True})["state"] == "queued"


def test_a_wrong_token_stops_the_worker_with_a_clear_error(secured: Server) -> None:
    ran: List[Any] = []
    events: List[Any] = []
    with Drove(secured.url, token="wrong") as wrong:
        worker = wrong.worker("auth", lambda ctx: ran.append(ctx.id), on_event=events.append)
        with pytest.raises(Unauthorized):
            worker.wait(timeout=LONG)
    assert worker.closed and isinstance(worker.error, Unauthorized)
    assert ran == []
    assert [e.type for e in events][-1] == "stopped" and isinstance(events[-1].error, Unauthorized)


async def test_a_wrong_token_stops_the_async_worker(secured: Server) -> None:
    async with AsyncDrove(secured.url, token="wrong") as wrong:
        worker = wrong.worker("auth", lambda ctx: None)
        with pytest.raises(Unauthorized):
            await worker.wait()
        assert worker.closed
        await worker.close()  # harmless once stopped


def test_a_revoked_token_tells_running_handlers(secured: Server) -> None:
    """The token works for the claim, then the server refuses it (a server restarted with
    another token): the handler is told, and the worker stops with the error."""
    from drove_client import WorkerClosed

    from conftest import wait_event

    started, told = threading.Event(), threading.Event()
    reasons: List[Any] = []

    def handler(ctx: Any) -> Any:
        started.set()
        ctx.cancelled.wait(LONG)
        reasons.append(ctx.cancel_reason)
        told.set()

    secured.drove.submit("auth-revoked", None)
    with Drove(secured.url, token=TOKEN) as drove:
        worker = drove.worker("auth-revoked", handler, lease_ms=1000)
        wait_event(started, "the handler to start")
        secured.kill()
        secured.token = "another-token"
        secured.start()
        wait_event(told, "the handler to be told")
        with pytest.raises(Unauthorized):
            worker.wait(timeout=LONG)
    assert isinstance(reasons[0], WorkerClosed) and isinstance(reasons[0].__cause__, Unauthorized)
    secured.kill()
    secured.token = TOKEN
    secured.start()


def test_the_right_token_works_for_workers(secured: Server) -> None:
    done = threading.Event()
    with secured.drove.worker("auth-ok", lambda ctx: done.set() or "ok"):
        assert secured.drove.submit_and_wait("auth-ok", None, wait_ms=int(LONG * 1000)) == "ok"
