"""What a handler's outcome does on the server: each raised outcome reaches it as its error
kind, common transient errors are classified by themselves, cancellation and timeouts set the
handler's ``ctx.cancelled``, and ``close()`` stops claiming, waits out its grace and releases
the rest."""

from __future__ import annotations

import email.utils
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import httpx
import pytest

from drove_client import (
    Drove,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    Permanent,
    Snooze,
    Throttled,
    Transient,
    WorkerClosed,
    default_classify,
    partial,
)

from conftest import LONG, Server, until, wait_event

# ---- classification, without a server


class _MySQLError(Exception):
    pass


_MySQLError.__module__ = "pymysql.err"
_MySQLError.__name__ = "OperationalError"


class _PsycopgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("could not serialize access")
        self.sqlstate = sqlstate


class _Psycopg2Error(Exception):
    def __init__(self, pgcode: str) -> None:
        super().__init__("deadlock detected")
        self.pgcode = pgcode


class _Wrapped(Exception):
    """Like SQLAlchemy's DBAPIError: the driver's error in ``.orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(str(orig))
        self.orig = orig


def test_default_classify_knows_common_transient_errors() -> None:
    response = httpx.Response(503, request=httpx.Request("GET", "http://x/"))
    transient = [
        _MySQLError(1213, "Deadlock found when trying to get lock"),
        _MySQLError(1205, "Lock wait timeout exceeded"),
        _PsycopgError("40001"),
        _PsycopgError("40P01"),
        _Psycopg2Error("40P01"),
        _Wrapped(_PsycopgError("40001")),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        httpx.HTTPStatusError("503", request=response.request, response=response),
        httpx.ReadTimeout("slow"),
    ]
    for exc in transient:
        assert default_classify(exc) == "transient", repr(exc)
    cause = RuntimeError("while saving")
    cause.__cause__ = ConnectionResetError()
    assert default_classify(cause) == "transient"
    not_transient = [
        _MySQLError(1062, "Duplicate entry"),
        _PsycopgError("23505"),
        ValueError("bad"),
        KeyError("x"),
        OSError(1205, "not mysql"),
        httpx.HTTPStatusError("500", request=response.request, response=httpx.Response(500, request=response.request)),
    ]
    for exc in not_transient:
        assert default_classify(exc) is None, repr(exc)


def test_errors_copy_and_pickle_with_their_attributes() -> None:
    import copy
    import pickle

    from drove_client import Invalid, JobFailed, LeaseLost

    errors: List[Any] = [
        Invalid(422, "invalid_value", "delay_ms: must be at least 0", "delay_ms"),
        LeaseLost("7", "job 7: gone", None),
        JobFailed({"id": "1", "queue": "q", "state": "failed", "error": {"kind": "permanent", "message": "m", "at": "t"}}),
    ]
    for err in errors:
        for clone in (copy.copy(err), pickle.loads(pickle.dumps(err))):
            assert type(clone) is type(err) and str(clone) == str(err) and clone.__dict__ == err.__dict__


def test_throttled_from_response_reads_retry_after() -> None:
    request = httpx.Request("GET", "http://x/")
    assert Throttled.from_response(httpx.Response(429, headers={"retry-after": "7"}, request=request)).retry_after_ms == 7000
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    ms = Throttled.from_response(httpx.Response(429, headers={"retry-after": when}, request=request)).retry_after_ms
    assert ms is not None and 25_000 <= ms <= 31_000
    bare = Throttled.from_response(httpx.Response(429, request=request))
    assert bare.retry_after_ms is None and "429" in str(bare)
    assert Throttled.from_response(httpx.Response(503, headers={"retry-after": "soon"}, request=request)).retry_after_ms is None


# ---- against the server

Mode = str


@pytest.mark.parametrize("batch_finish", [True, False], ids=["batched-ends", "single-run-ends"])
def test_each_outcome_reaches_the_server_as_its_kind(server: Server, batch_finish: bool) -> None:
    drove = server.drove
    queue = f"kinds-{batch_finish}"
    drove.set_queue(queue, backoff={"base_ms": 0, "max_ms": 0})
    second: Dict[Mode, Dict[str, Any]] = {}
    runs: Dict[str, int] = {}
    lock = threading.Lock()

    def handler(ctx: Any) -> Any:
        mode = ctx.payload["mode"]
        if mode == "partial":
            return partial({"done": 9, "of": 10})
        with lock:
            runs[ctx.id] = runs.get(ctx.id, 0) + 1
            run = runs[ctx.id]
        if run == 1:
            if mode == "throttled":
                raise Throttled(50, "the provider said 429")
            if mode == "snooze":
                raise Snooze(50)
            if mode == "retryable":
                raise TypeError("connection reset")
            if mode == "classified":
                raise _MySQLError(1062, "Duplicate entry")  # not transient: retryable
            if mode == "overridden":
                raise KeyError("missing")  # classify= says permanent
            raise Permanent("the input is malformed")
        second[mode] = {"attempt": ctx.attempt, "error": ctx.job.get("error")}
        return {"mode": mode, "attempt": ctx.attempt}

    def classify(exc: BaseException) -> Optional[str]:
        return "permanent" if isinstance(exc, KeyError) else None

    kinds: List[str] = []
    on_event = lambda e: e.type == "failed" and kinds.append(str(e.kind))  # noqa: E731
    with drove.worker(queue, handler, concurrency=4, classify=classify, on_event=on_event, batch_finish=batch_finish):
        def run(mode: str) -> Any:
            return drove.submit_and_wait(queue, {"mode": mode}, wait_ms=int(LONG * 1000))

        assert run("throttled")["attempt"] == 1, "a throttled run uses no attempt"
        assert second["throttled"]["error"]["kind"] == "throttled"
        assert second["throttled"]["error"]["message"] == "the provider said 429"
        assert run("snooze")["attempt"] == 1, "a snoozed run uses no attempt"
        assert second["snooze"]["error"] is None, "a snooze is not an error"
        assert run("retryable")["attempt"] == 2, "a retryable failure uses an attempt"
        assert second["retryable"]["error"]["kind"] == "retryable"
        assert second["retryable"]["error"]["message"] == "TypeError: connection reset"
        assert run("classified")["attempt"] == 2
        assert second["classified"]["error"]["kind"] == "retryable"

        for mode in ("permanent", "overridden"):
            with pytest.raises(JobFailed) as failed:
                run(mode)
            assert failed.value.kind == "permanent", mode
            assert failed.value.job["attempt"] == 1, "a permanent failure ends the job at once"
        assert failed.value.job["error"]["message"] == "KeyError: 'missing'"

        job = drove.submit(queue, {"mode": "partial"})
        done = drove.get(job["id"], wait_ms=int(LONG * 1000))
        assert done["state"] == "succeeded" and done["partial"] is True
        assert done["result"] == {"done": 9, "of": 10}
        until(lambda: len(kinds) >= 6, "the worker to hear of every failure")
    assert sorted(kinds) == ["permanent", "permanent", "retryable", "retryable", "snooze", "throttled"]


def test_throttled_holds_the_job_for_its_retry_after(server: Server) -> None:
    drove = server.drove
    stored = threading.Event()
    events: List[Any] = []

    def on_event(e: Any) -> None:
        if e.type == "failed":
            events.append(e)
            stored.set()

    def handler(ctx: Any) -> Any:
        raise Throttled(60_000)

    with drove.worker("hold", handler, on_event=on_event):
        job = drove.submit("hold", None)
        wait_event(stored, "the throttled run to be stored")
    assert (events[0].kind, events[0].state) == ("throttled", "scheduled")
    held = drove.get(job["id"])
    assert held["state"] == "scheduled" and held["attempt"] == 1 and held["error"]["kind"] == "throttled"
    from drove_client._http import parse_time

    wait = (parse_time(held["run_at"]) or 0) - (parse_time(held["error"]["at"]) or 0)
    assert 59 <= wait <= 61, f"held for {wait} s, asked for 60"
    drove.cancel(job["id"])


def _server_knows_transient(server: Server) -> Tuple[bool, str]:
    """Asks the server itself: a run failed with kind "transient" (422 on an older server)."""
    drove = server.drove
    drove.submit("transient-probe", None)
    with httpx.Client() as http:
        claim = http.post(f"{server.url}/v1/queues/transient-probe/claim", json={"max": 1, "worker": "probe"}).json()
        job = claim["jobs"][0]
        answer = http.post(f"{server.url}/v1/jobs/{job['id']}/fail", json={"lease": job["lease"], "error": {"message": "probe", "kind": "transient"}})
        if answer.status_code == 200:
            drove.cancel(job["id"])
            return True, ""
        http.post(f"{server.url}/v1/jobs/{job['id']}/complete", json={"lease": job["lease"], "result": None})
        return False, f"{answer.status_code} {answer.text}"


@pytest.mark.parametrize("batch_finish", [True, False], ids=["batched-ends", "single-run-ends"])
def test_transient_errors_retry_on_their_own_budget(server: Server, batch_finish: bool) -> None:
    knows, why = _server_knows_transient(server)
    drove = server.drove
    queue = f"transient-{batch_finish}"
    drove.set_queue(queue, backoff={"base_ms": 0, "max_ms": 0})
    runs: Dict[str, int] = {}

    def handler(ctx: Any) -> Any:
        runs[ctx.id] = runs.get(ctx.id, 0) + 1
        if runs[ctx.id] == 1:
            raise Transient("deadlock, try again")
        if runs[ctx.id] == 2:
            raise _MySQLError(1213, "Deadlock found when trying to get lock")
        return {"attempt": ctx.attempt, "error": ctx.job.get("error"), "transient_retries": ctx.job.get("transient_retries")}

    kinds: List[str] = []
    with drove.worker(queue, handler, batch_finish=batch_finish, on_event=lambda e: e.type == "failed" and kinds.append(str(e.kind))):
        answer = drove.submit_and_wait(queue, None, max_attempts=5, wait_ms=int(LONG * 1000))
        until(lambda: len(kinds) == 2, "the worker to hear of both failures")
    if not knows:
        # The worker fell back to "retryable" by itself; the job still succeeded.
        assert answer["error"]["kind"] == "retryable" and answer["attempt"] == 3
        assert kinds == ["retryable", "retryable"]
        pytest.skip(f"the server ({server.url}) does not know error.kind 'transient' yet (it answered {why}); the worker fell back to retryable")
    assert answer["error"]["kind"] == "transient" and kinds == ["transient", "transient"]
    assert answer["attempt"] == 1, "transient retries do not use max_attempts"
    assert answer["transient_retries"] == 2


def test_cancelling_a_running_job_sets_ctx_cancelled(server: Server) -> None:
    drove = server.drove
    started = threading.Event()
    reasons: List[Any] = []
    box: Dict[str, Any] = {}

    def handler(ctx: Any) -> Any:
        box["id"] = ctx.id
        started.set()
        ctx.sleep(LONG)  # raises the cancel reason once cancelled
        return "not cancelled"

    def on_event(e: Any) -> None:
        if e.type == "failed":
            reasons.append(e.error)

    def wait() -> None:
        try:
            drove.submit_and_wait("cancel", {"long": True}, wait_ms=int(LONG * 1000))
        except BaseException as err:  # noqa: BLE001 - inspected below
            box["err"] = err

    # A short lease: heartbeats (which carry the cancel) go out every third of it.
    with drove.worker("cancel", handler, lease_ms=1000, on_event=on_event):
        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_event(started, "the handler to start")
        marked = drove.cancel(box["id"])
        assert marked["state"] == "running" and marked["cancel_requested"] is True
        waiter.join(LONG)
        until(lambda: reasons, "the worker to report the cancelled run")
    assert isinstance(reasons[0], JobCancelled), reasons
    assert isinstance(box["err"], JobFailed) and box["err"].kind == "cancelled"
    assert drove.get(box["id"])["state"] == "cancelled"


def test_a_handler_that_ignores_its_cancellation_is_reported_stuck(server: Server) -> None:
    drove = server.drove
    started, may_return = threading.Event(), threading.Event()
    stuck: List[Any] = []

    def handler(ctx: Any) -> Any:
        started.set()
        may_return.wait(LONG)  # ignores ctx.cancelled
        return "late"

    def on_event(e: Any) -> None:
        if e.type == "stuck":
            stuck.append(e)

    with drove.worker("stuck", handler, lease_ms=1000, stuck_after_ms=200, on_event=on_event) as worker:
        job = drove.submit("stuck", None)
        wait_event(started, "the handler to start")
        drove.cancel(job["id"])
        until(lambda: stuck, "the stuck handler to be reported")
        assert worker.running == 1, "a stuck handler keeps its slot"
        may_return.set()
    assert isinstance(stuck[0].error, JobCancelled) and stuck[0].ms >= 200
    assert stuck[0].job["id"] == job["id"]
    assert drove.get(job["id"])["state"] == "succeeded", "a handler that completes anyway records the success"


def test_a_job_past_its_timeout_is_told_and_fails_with_kind_timeout(server: Server) -> None:
    drove = server.drove
    reasons: List[Any] = []

    async def handler(ctx: Any) -> Any:  # an async handler, on the sync worker's own loop
        await ctx.cancelled.wait()
        reasons.append(ctx.cancel_reason)
        ctx.raise_if_cancelled()

    with drove.worker("timeouts", handler):
        with pytest.raises(JobFailed) as failed:
            drove.submit_and_wait("timeouts", None, timeout_ms=1000, max_attempts=1, wait_ms=int(LONG * 1000))
    assert failed.value.kind == "timeout"
    assert isinstance(reasons[0], JobTimedOut)


def test_a_result_json_cannot_hold_fails_permanently(server: Server) -> None:
    drove = server.drove
    with drove.worker("not-json", lambda ctx: {"when": object()}):
        with pytest.raises(JobFailed) as failed:
            drove.submit_and_wait("not-json", None, wait_ms=int(LONG * 1000))
    assert failed.value.kind == "permanent"
    assert "not JSON" in failed.value.job["error"]["message"]


def test_a_result_over_the_size_limit_fails_permanently(server: Server) -> None:
    drove = server.drove
    with drove.worker("too-big", lambda ctx: "x" * (1024 * 1024 + 10)):
        with pytest.raises(JobFailed) as failed:
            drove.submit_and_wait("too-big", None, wait_ms=int(LONG * 1000))
    assert failed.value.kind == "permanent"
    assert "result was refused" in failed.value.job["error"]["message"]


def test_close_stops_claiming_lets_handlers_finish_and_releases_the_rest(server: Server) -> None:
    drove = server.drove
    idle = drove.worker("closing-idle", lambda ctx: None, poll_ms=60_000)
    # Once the queue exists, the idle worker's 60 s long poll has reached the server.
    until(lambda: "closing-idle" in [q["name"] for q in drove.queues()], "the idle worker's claim to reach the server")
    closer = threading.Thread(target=idle.close)
    closer.start()
    closer.join(30)
    assert not closer.is_alive() and idle.closed, "close() must cancel the pending 60 s long poll"

    quick_started, quick_may_finish, stuck_started = threading.Event(), threading.Event(), threading.Event()
    reasons: List[Any] = []

    def handler(ctx: Any) -> Any:
        if ctx.payload["name"] == "quick":
            quick_started.set()
            quick_may_finish.wait(LONG)
            return {"done": True}
        stuck_started.set()
        ctx.cancelled.wait(LONG)
        reasons.append(ctx.cancel_reason)
        ctx.raise_if_cancelled()

    worker = drove.worker("closing", handler, concurrency=2)
    quick = drove.submit("closing", {"name": "quick"})
    stuck = drove.submit("closing", {"name": "stuck"})
    wait_event(quick_started, "the quick handler to start")
    wait_event(stuck_started, "the stuck handler to start")
    closer = threading.Thread(target=lambda: worker.close(grace_ms=1500))
    closer.start()
    quick_may_finish.set()
    closer.join(LONG)
    assert not closer.is_alive()
    until(lambda: reasons, "the stuck handler to be told")
    assert isinstance(reasons[0], WorkerClosed)
    assert drove.get(quick["id"])["state"] == "succeeded", "a handler that finished within the grace completes"
    s = drove.get(stuck["id"])
    assert s["state"] == "queued", "a handler still running after the grace is released"
    assert s["attempt"] == 1
    drove.cancel(stuck["id"])


class _Cuttable(httpx.AsyncBaseTransport):
    """A worker's own network link that the test can cut (a partition of that worker alone)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("partitioned by the test", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_lost_lease_tells_the_handler_and_its_late_completion_is_refused(server: Server) -> None:
    drove = server.drove
    drove.set_queue("lost", lease_ms=1000, backoff={"base_ms": 0, "max_ms": 0})
    link = _Cuttable()
    via_link = Drove(server.url, worker_http_client=lambda: httpx.AsyncClient(transport=link))
    a_started, a_told, a_may_return = threading.Event(), threading.Event(), threading.Event()
    a_ctx: Dict[str, Any] = {}
    refused: List[Any] = []

    def a_handler(ctx: Any) -> Any:
        a_ctx.update(id=ctx.id, lease=ctx.lease)
        a_started.set()
        ctx.cancelled.wait(LONG)
        a_ctx["reason"] = ctx.cancel_reason
        a_told.set()
        a_may_return.wait(LONG)  # a zombie: it finishes anyway
        return {"by": "A"}

    a = via_link.worker("lost", a_handler, on_event=lambda e: e.type == "refused" and refused.append(e))
    b = None
    try:
        job = drove.submit("lost", None)
        wait_event(a_started, "worker A to start the job")
        link.cut = True
        wait_event(a_told, "worker A to be told its lease is gone")
        from drove_client import LeaseLost

        assert isinstance(a_ctx["reason"], LeaseLost)
        b = drove.worker("lost", lambda ctx: {"by": "B", "attempt": ctx.attempt, "error": ctx.job["error"]["kind"]})
        done = drove.get(job["id"], wait_ms=int(LONG * 1000))
        assert done["state"] == "succeeded"
        assert done["result"] == {"by": "B", "attempt": 2, "error": "lost"}, "a lost lease uses an attempt"
        assert not a.online, "worker A cannot reach the server"
        link.cut = False
        until(lambda: a.online, "worker A to reach the server again")
        a_may_return.set()
        until(lambda: refused, "A's late completion to be refused")
        assert isinstance(refused[0].error, LeaseLost) and refused[0].error.status == 409, "the server itself refused it"
        assert drove.get(job["id"])["result"]["by"] == "B", "the zombie's result must not overwrite the newer run"
    finally:
        link.cut = False
        a_may_return.set()
        a.close(grace_ms=5000)
        if b is not None:
            b.close()
