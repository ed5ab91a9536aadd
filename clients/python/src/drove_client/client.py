"""The sync client: submitting and awaiting jobs, reading them, queue and pool settings, and
workers. Speaks only the v1 contract (docs/API.md in the repository, ``GET /v1/openapi.json``)."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import httpx

from ._http import (
    DEFAULT_WAIT_MS,
    LONG_POLL_MS,
    MAX_BATCH,
    UNSET,
    AsyncHTTP,
    Backoff,
    SyncHTTP,
    is_terminal,
    job_path,
    name_path,
    settings_body,
    spec_body,
    submit_body,
    wait_param,
)
from .errors import DroveError, JobFailed, WaitTimeout
from .outcomes import Classifier
from .types import Job, JobPage, JobSpec, PoolInfo, QueueInfo
from .worker import Handler, Worker, WorkerEvent

__all__ = ["Drove"]


class _Flight:
    """One once() wait shared by every caller of the same (queue, key) in this process."""

    __slots__ = ("done", "job", "error", "callers")

    def __init__(self) -> None:
        self.callers = 0
        self.done = threading.Event()
        self.job: Optional[Job] = None
        self.error: Optional[BaseException] = None


class Drove:
    """A client of one Drove server, for sync code (thread-safe; one per process is enough).

    ``token`` is sent as ``Authorization: Bearer``. ``long_poll_ms`` (at most and by default
    60 s, the server's limit) shortens each long poll behind a proxy that cuts idle requests
    sooner. ``http_client`` is an ``httpx.Client`` of yours (proxies, certificates, event
    hooks); ``worker_http_client`` makes the ``httpx.AsyncClient`` each worker uses on its own
    event loop. ``timeout`` bounds every request but the long polls (seconds).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7070",
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        long_poll_ms: int = LONG_POLL_MS,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.Client] = None,
        worker_http_client: Optional[Callable[[], httpx.AsyncClient]] = None,
    ) -> None:
        self._http = SyncHTTP(url, token, headers, timeout, http_client)
        self._token = token
        self._headers = headers
        self._timeout = timeout
        self._worker_http_client = worker_http_client
        self._long_poll_ms = min(LONG_POLL_MS, max(1, int(long_poll_ms)))
        self._flights: Dict[Tuple[str, str, Optional[int]], _Flight] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The server this client talks to."""
        return self._http.base

    def close(self) -> None:
        """Closes the HTTP connections (not the workers: close those first)."""
        self._http.close()

    def __enter__(self) -> "Drove":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- submitting

    def submit(
        self,
        queue: str,
        payload: Any = None,
        *,
        key: Optional[str] = None,
        group: Optional[str] = None,
        priority: Optional[int] = None,
        delay_ms: Optional[int] = None,
        run_at: Any = None,
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        reuse_for_ms: Optional[int] = None,
        on_conflict: Optional[str] = None,
        kind: Optional[str] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> Job:
        """Stores a job; returns it once durably stored: a new job (``deduplicated: False``) or
        the active job with the same key that this submit joined (``deduplicated: True``).
        ``run_at`` is a timezone-aware datetime or an RFC 3339 string; ``on_conflict`` is
        ``"join"`` (default), ``"replace"`` or ``"reject"`` (:class:`KeyConflict`).
        ``traceparent`` (and ``tracestate``): the W3C trace context the job's runs descend from
        (docs/API.md "Traces"); the job keeps it and workers get it with the job."""
        body = submit_body(queue, payload, dict(
            key=key, group=group, priority=priority, delay_ms=delay_ms, run_at=run_at,
            max_attempts=max_attempts, timeout_ms=timeout_ms, reuse_for_ms=reuse_for_ms,
            on_conflict=on_conflict, kind=kind, traceparent=traceparent, tracestate=tracestate,
        ))
        return self._http.request("POST", "/v1/jobs", body)[1]  # type: ignore[no-any-return]

    def submit_many(self, jobs: Iterable[JobSpec]) -> List[Job]:
        """Submits many jobs (``POST /v1/jobs/batch``, 1,000 per request), answering them in
        order. Each request is all or nothing (a 422 names the entry: ``jobs[3].queue``)."""
        bodies = [spec_body(j) for j in jobs]
        out: List[Job] = []
        for i in range(0, len(bodies), MAX_BATCH):
            answer = self._http.request("POST", "/v1/jobs/batch", {"jobs": bodies[i : i + MAX_BATCH]})[1]
            out.extend(answer["jobs"])
        return out

    def submit_and_wait(
        self,
        queue: str,
        payload: Any = None,
        *,
        wait_ms: int = DEFAULT_WAIT_MS,
        key: Optional[str] = None,
        group: Optional[str] = None,
        priority: Optional[int] = None,
        delay_ms: Optional[int] = None,
        run_at: Any = None,
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        reuse_for_ms: Optional[int] = None,
        on_conflict: Optional[str] = None,
        kind: Optional[str] = None,
    ) -> Any:
        """Submits a job and returns its result once it succeeded. A failed or cancelled job
        raises :class:`JobFailed` (``.job``, ``.kind``); one still unfinished after ``wait_ms``
        (default 60 s) raises :class:`WaitTimeout` (``.job``). Longer waits keep polling."""
        options = dict(
            key=key, group=group, priority=priority, delay_ms=delay_ms, run_at=run_at,
            max_attempts=max_attempts, timeout_ms=timeout_ms, reuse_for_ms=reuse_for_ms,
            on_conflict=on_conflict, kind=kind,
        )
        return _result(self._submit_waiting(queue, payload, options, wait_ms))

    def once(
        self,
        queue: str,
        key: str,
        payload: Any = None,
        *,
        reuse_for_ms: Optional[int] = None,
        wait_ms: int = DEFAULT_WAIT_MS,
        group: Optional[str] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        kind: Optional[str] = None,
    ) -> Any:
        """One computation per key: every caller, in this process or any other, that asks for
        the same ``(queue, key)`` while its job is active (or, with ``reuse_for_ms``, succeeded
        that recently) gets the result of that one job. Concurrent calls in this process for
        the same queue, key and ``reuse_for_ms`` share one HTTP wait. Raises like
        :meth:`submit_and_wait`."""
        if not isinstance(key, str) or not key:
            raise TypeError("once(queue, key, payload) needs a key")
        options: Dict[str, Any] = dict(key=key, reuse_for_ms=reuse_for_ms, group=group, priority=priority,
                       max_attempts=max_attempts, timeout_ms=timeout_ms, kind=kind)
        deadline = time.monotonic() + max(0, wait_ms) / 1000.0
        fkey = (queue, key, reuse_for_ms)
        with self._lock:
            flight = self._flights.get(fkey)
            leader = flight is None
            if flight is None:
                flight = self._flights[fkey] = _Flight()
            flight.callers += 1
        if leader:
            try:
                flight.job = self._submit_waiting(queue, payload, options, wait_ms, flight)
            except BaseException as err:
                flight.error = err
                raise
            finally:
                with self._lock:
                    if self._flights.get(fkey) is flight:
                        del self._flights[fkey]
                flight.done.set()
            return _result(flight.job)
        # A follower: the leader's wait answers it, within this caller's own wait.
        if not flight.done.wait(max(0.0, deadline - time.monotonic())):
            job = flight.job or self.submit(queue, payload, **options)  # joins: names the job
            raise WaitTimeout(job, wait_ms)
        if isinstance(flight.error, WaitTimeout):
            if time.monotonic() >= deadline:
                raise WaitTimeout(flight.error.job, wait_ms)
            # The leader waited less long than this caller: go on waiting alone.
            return _result(self._follow(flight.error.job, deadline, wait_ms))
        if flight.error is not None:
            raise copy.copy(flight.error)
        assert flight.job is not None
        return _result(flight.job)

    # ---- reading and steering jobs

    def get(self, job_id: str, *, wait_ms: Optional[int] = None) -> Job:
        """The job. With ``wait_ms``, waits (long polls) until it is terminal or the time is up,
        then answers it as it is."""
        if wait_ms is None:
            return self._http.request("GET", job_path(job_id))[1]  # type: ignore[no-any-return]
        deadline = time.monotonic() + max(0, wait_ms) / 1000.0
        poll = self._poll_ms(deadline)
        job = self._http.request("GET", f"{job_path(job_id)}?wait={wait_param(poll)}", long_poll_s=poll / 1000.0)[1]
        return self._follow(job, deadline, None)

    def list(
        self,
        *,
        queue: Optional[str] = None,
        state: Optional[str] = None,
        key: Optional[str] = None,
        group: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> JobPage:
        """A page of jobs, newest first; pass ``next_cursor`` back as ``cursor``."""
        params = {k: v for k, v in dict(queue=queue, state=state, key=key, group=group, limit=limit, cursor=cursor).items() if v is not None}
        qs = str(httpx.QueryParams(params))
        return self._http.request("GET", "/v1/jobs" + (f"?{qs}" if qs else ""))[1]  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> Job:
        """Cancels a job: a scheduled or queued job at once; a running one is marked
        ``cancel_requested`` and its handler's ``ctx.cancelled`` is set on its next heartbeat.
        A finished job: :class:`WrongState`."""
        return self._http.request("POST", job_path(job_id, "cancel"))[1]  # type: ignore[no-any-return]

    def retry(self, job_id: str) -> Job:
        """Queues a failed or cancelled job again, with attempt 0."""
        return self._http.request("POST", job_path(job_id, "retry"))[1]  # type: ignore[no-any-return]

    # ---- queues and pools

    def queues(self) -> List[QueueInfo]:
        """Every queue with its settings, counts and limit in force."""
        return self._http.request("GET", "/v1/queues")[1]["queues"]  # type: ignore[no-any-return]

    def queue(self, name: str) -> QueueInfo:
        """One queue (:class:`NotFound` for a name never used)."""
        return self._http.request("GET", name_path("queues", name))[1]  # type: ignore[no-any-return]

    def set_queue(
        self,
        name: str,
        *,
        concurrency: Optional[int] = UNSET,
        group_concurrency: Optional[int] = UNSET,
        rate: Optional[Mapping[str, int]] = UNSET,
        group_rate: Optional[Mapping[str, int]] = UNSET,
        adaptive: Optional[Mapping[str, int]] = UNSET,
        pool: Optional[str] = UNSET,
        lane: Optional[str] = UNSET,
        paused: Optional[bool] = UNSET,
        max_attempts: Optional[int] = UNSET,
        backoff: Optional[Mapping[str, int]] = UNSET,
        timeout_ms: Optional[int] = UNSET,
        lease_ms: Optional[int] = UNSET,
        reuse_for_ms: Optional[int] = UNSET,
        **more: Any,
    ) -> QueueInfo:
        """Changes a queue's settings, on every node at once. An omitted setting stays as it
        is; ``None`` clears one. ``rate={"limit": 10, "period_ms": 1000, "burst": 1}``,
        ``backoff={"base_ms": 1000, "max_ms": 60000}``, ``adaptive={"min": 1, "max": 50}``;
        ``more`` passes settings this client does not know yet."""
        body = settings_body(dict(
            concurrency=concurrency, group_concurrency=group_concurrency, rate=rate,
            group_rate=group_rate, adaptive=adaptive, pool=pool, lane=lane, paused=paused,
            max_attempts=max_attempts, backoff=backoff, timeout_ms=timeout_ms, lease_ms=lease_ms,
            reuse_for_ms=reuse_for_ms, **more,
        ))
        return self._http.request("PUT", name_path("queues", name), body)[1]  # type: ignore[no-any-return]

    def pool(self, name: str) -> PoolInfo:
        """A pool: the shared limits of queues that call the same downstream."""
        return self._http.request("GET", name_path("pools", name))[1]  # type: ignore[no-any-return]

    def set_pool(
        self,
        name: str,
        *,
        concurrency: Optional[int] = UNSET,
        adaptive: Optional[Mapping[str, int]] = UNSET,
        offline_min_share: Optional[float] = UNSET,
        **more: Any,
    ) -> PoolInfo:
        """Changes a pool's settings (omitted: unchanged; ``None``: cleared)."""
        body = settings_body(dict(concurrency=concurrency, adaptive=adaptive, offline_min_share=offline_min_share, **more))
        return self._http.request("PUT", name_path("pools", name), body)[1]  # type: ignore[no-any-return]

    # ---- workers

    def worker(
        self,
        queue: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        lease_ms: Optional[int] = None,
        name: Optional[str] = None,
        poll_ms: int = 20_000,
        grace_ms: int = 30_000,
        progress_interval_ms: int = 1_000,
        batch_finish: bool = True,
        classify: Optional[Classifier] = None,
        on_event: Optional[Callable[[WorkerEvent], None]] = None,
        stuck_after_ms: int = 10_000,
    ) -> Worker:
        """Starts a worker on ``queue`` and returns it at once, running. ``handler(ctx)`` gets
        a :class:`JobContext` (or, if it is ``async def``, an :class:`AsyncJobContext`) and
        returns the result, or raises :class:`Throttled`, :class:`Permanent`,
        :class:`Snooze`, :class:`Transient` or any other exception (retryable).

        ``concurrency``: jobs at once (threads for a sync handler). ``lease_ms``: the lease
        asked for (default: the queue's, 10 s); heartbeats go every third of it. ``poll_ms``:
        the longest claim long poll. ``grace_ms``: how long ``close()`` lets handlers finish.
        ``classify(exc)``: overrides how an exception is classified (see
        :func:`default_classify`). ``on_event(event)``: told of every run's end, of outages
        and of stuck handlers (called on the worker's loop thread: keep it quick).
        ``stuck_after_ms``: a handler still running this long after it was told to stop is
        reported (``stuck`` event and a warning; 0: never)."""

        def make_http() -> AsyncHTTP:
            client = self._worker_http_client() if self._worker_http_client is not None else None
            return AsyncHTTP(self._http.base, self._token, self._headers, self._timeout, client)

        return Worker(
            make_http,
            queue,
            handler,
            concurrency=concurrency,
            lease_ms=lease_ms,
            name=name,
            poll_ms=poll_ms,
            grace_ms=grace_ms,
            progress_interval_ms=progress_interval_ms,
            batch_finish=batch_finish,
            classify=classify,
            on_event=on_event,
            stuck_after_ms=stuck_after_ms,
        )

    # ---- waiting

    def _poll_ms(self, deadline: float) -> int:
        """The ``?wait=`` of the next long poll: what is left until ``deadline``, at most one."""
        return int(min(self._long_poll_ms, max(0.0, (deadline - time.monotonic()) * 1000.0)))

    def _submit_waiting(
        self,
        queue: str,
        payload: Any,
        options: Dict[str, Any],
        wait_ms: int,
        flight: Optional[_Flight] = None,
    ) -> Job:
        deadline = time.monotonic() + max(0, wait_ms) / 1000.0
        body = submit_body(queue, payload, options)
        # A keyed submit that joins is safe to repeat: a repeat joins the same job (or reuses
        # its result), so a server restart or a dropped connection is retried within the wait.
        repeatable = options.get("key") is not None and options.get("on_conflict") in (None, "join")
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                poll = self._poll_ms(deadline)
                job = self._http.request("POST", f"/v1/jobs?wait={wait_param(poll)}", body, long_poll_s=poll / 1000.0)[1]
                if flight is not None:
                    flight.job = job
                return self._follow(job, deadline, wait_ms)
            except DroveError as err:
                pause = backoff.next()
                if not repeatable or not err.transient or time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)

    def _follow(self, job: Job, deadline: float, timeout_after_ms: Optional[int]) -> Job:
        """Long-polls the job until it is terminal or ``deadline`` passes. With
        ``timeout_after_ms``, an unfinished job then raises WaitTimeout; without, it is
        answered as it is. Transient failures (a server restarting, a 503) are retried."""
        path = job_path(job["id"])
        backoff = Backoff(0.05, 2.0)
        while not is_terminal(job):
            left = deadline - time.monotonic()
            if left <= 0:
                if timeout_after_ms is not None:
                    raise WaitTimeout(job, timeout_after_ms)
                return job
            try:
                poll = self._poll_ms(deadline)
                job = self._http.request("GET", f"{path}?wait={wait_param(poll)}", long_poll_s=poll / 1000.0)[1]
                backoff.reset()
            except DroveError as err:
                if not err.transient:
                    raise
                time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
        return job


def _result(job: Optional[Job]) -> Any:
    assert job is not None
    if job.get("state") == "succeeded":
        return job.get("result")
    raise JobFailed(job)
