"""The asyncio client: the same calls as :class:`Drove`, awaitable, on one
``httpx.AsyncClient``; its workers run on the caller's event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import httpx

from ._http import (
    DEFAULT_WAIT_MS,
    LONG_POLL_MS,
    MAX_BATCH,
    UNSET,
    AsyncHTTP,
    Backoff,
    is_terminal,
    job_path,
    name_path,
    settings_body,
    spec_body,
    submit_body,
    wait_param,
)
from .client import _result
from .errors import DroveError, WaitTimeout
from .outcomes import Classifier
from .types import Job, JobPage, JobSpec, PoolInfo, QueueInfo
from .worker import AsyncWorker, Handler, WorkerEvent

__all__ = ["AsyncDrove"]


class _Flight:
    """One once() wait shared by every caller of the same (queue, key) on this loop: a task of
    its own, so a caller that is cancelled (a client that hung up) does not end it for the
    others."""

    __slots__ = ("task", "job", "callers")

    def __init__(self) -> None:
        self.callers = 0
        self.task: "Optional[asyncio.Task[Job]]" = None
        self.job: Optional[Job] = None


class AsyncDrove:
    """A client of one Drove server, for asyncio code. Use it on one event loop; close it with
    ``await drove.aclose()`` (or ``async with``). Options as :class:`Drove`; ``http_client`` is
    an ``httpx.AsyncClient`` of yours, which this client's workers share."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:7070",
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        long_poll_ms: int = LONG_POLL_MS,
        headers: Optional[Mapping[str, str]] = None,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self._http = AsyncHTTP(url, token, headers, timeout, http_client)
        self._long_poll_ms = min(LONG_POLL_MS, max(1, int(long_poll_ms)))
        self._flights: Dict[Tuple[str, str, Optional[int]], _Flight] = {}

    @property
    def url(self) -> str:
        return self._http.base

    async def aclose(self) -> None:
        """Closes the HTTP connections (not the workers: close those first)."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncDrove":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ---- submitting

    async def submit(
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
        """As :meth:`Drove.submit`."""
        body = submit_body(queue, payload, dict(
            key=key, group=group, priority=priority, delay_ms=delay_ms, run_at=run_at,
            max_attempts=max_attempts, timeout_ms=timeout_ms, reuse_for_ms=reuse_for_ms,
            on_conflict=on_conflict, kind=kind, traceparent=traceparent, tracestate=tracestate,
        ))
        return (await self._http.request("POST", "/v1/jobs", body))[1]  # type: ignore[no-any-return]

    async def submit_many(self, jobs: Iterable[JobSpec]) -> List[Job]:
        """As :meth:`Drove.submit_many`."""
        bodies = [spec_body(j) for j in jobs]
        out: List[Job] = []
        for i in range(0, len(bodies), MAX_BATCH):
            answer = (await self._http.request("POST", "/v1/jobs/batch", {"jobs": bodies[i : i + MAX_BATCH]}))[1]
            out.extend(answer["jobs"])
        return out

    async def submit_and_wait(
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
        """As :meth:`Drove.submit_and_wait`."""
        options = dict(
            key=key, group=group, priority=priority, delay_ms=delay_ms, run_at=run_at,
            max_attempts=max_attempts, timeout_ms=timeout_ms, reuse_for_ms=reuse_for_ms,
            on_conflict=on_conflict, kind=kind,
        )
        return _result(await self._submit_waiting(queue, payload, options, wait_ms))

    async def once(
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
        """As :meth:`Drove.once`: concurrent calls on this loop for the same queue, key and
        ``reuse_for_ms`` share one HTTP wait."""
        if not isinstance(key, str) or not key:
            raise TypeError("once(queue, key, payload) needs a key")
        options: Dict[str, Any] = dict(key=key, reuse_for_ms=reuse_for_ms, group=group, priority=priority,
                       max_attempts=max_attempts, timeout_ms=timeout_ms, kind=kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, wait_ms) / 1000.0
        fkey = (queue, key, reuse_for_ms)
        flight = self._flights.get(fkey)
        if flight is None:
            new = flight = self._flights[fkey] = _Flight()
            task = asyncio.ensure_future(self._submit_waiting(queue, payload, options, wait_ms, new))
            new.task = task

            def landed(t: "asyncio.Task[Job]") -> None:
                if self._flights.get(fkey) is new:
                    del self._flights[fkey]
                if not t.cancelled():
                    t.exception()  # retrieved: no "never retrieved" warning when nobody waits

            task.add_done_callback(landed)
        assert flight.task is not None
        flight.callers += 1
        try:
            job = await asyncio.wait_for(asyncio.shield(flight.task), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            job_seen = flight.job or await self.submit(queue, payload, **options)  # joins: names the job
            raise WaitTimeout(job_seen, wait_ms) from None
        except WaitTimeout as err:
            if loop.time() >= deadline:
                raise WaitTimeout(err.job, wait_ms) from None
            # The first caller waited less long than this one: go on waiting alone.
            job = await self._follow(err.job, deadline, wait_ms)
        return _result(job)

    # ---- reading and steering jobs

    async def get(self, job_id: str, *, wait_ms: Optional[int] = None) -> Job:
        """As :meth:`Drove.get`."""
        if wait_ms is None:
            return (await self._http.request("GET", job_path(job_id)))[1]  # type: ignore[no-any-return]
        deadline = asyncio.get_running_loop().time() + max(0, wait_ms) / 1000.0
        poll = self._poll_ms(deadline)
        job = (await self._http.request("GET", f"{job_path(job_id)}?wait={wait_param(poll)}", long_poll_s=poll / 1000.0))[1]
        return await self._follow(job, deadline, None)

    async def list(
        self,
        *,
        queue: Optional[str] = None,
        state: Optional[str] = None,
        key: Optional[str] = None,
        group: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> JobPage:
        """As :meth:`Drove.list`."""
        params = {k: v for k, v in dict(queue=queue, state=state, key=key, group=group, limit=limit, cursor=cursor).items() if v is not None}
        qs = str(httpx.QueryParams(params))
        return (await self._http.request("GET", "/v1/jobs" + (f"?{qs}" if qs else "")))[1]  # type: ignore[no-any-return]

    async def cancel(self, job_id: str) -> Job:
        """As :meth:`Drove.cancel`."""
        return (await self._http.request("POST", job_path(job_id, "cancel")))[1]  # type: ignore[no-any-return]

    async def retry(self, job_id: str) -> Job:
        """As :meth:`Drove.retry`."""
        return (await self._http.request("POST", job_path(job_id, "retry")))[1]  # type: ignore[no-any-return]

    # ---- queues and pools

    async def queues(self) -> List[QueueInfo]:
        return (await self._http.request("GET", "/v1/queues"))[1]["queues"]  # type: ignore[no-any-return]

    async def queue(self, name: str) -> QueueInfo:
        return (await self._http.request("GET", name_path("queues", name)))[1]  # type: ignore[no-any-return]

    async def set_queue(
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
        """As :meth:`Drove.set_queue`."""
        body = settings_body(dict(
            concurrency=concurrency, group_concurrency=group_concurrency, rate=rate,
            group_rate=group_rate, adaptive=adaptive, pool=pool, lane=lane, paused=paused,
            max_attempts=max_attempts, backoff=backoff, timeout_ms=timeout_ms, lease_ms=lease_ms,
            reuse_for_ms=reuse_for_ms, **more,
        ))
        return (await self._http.request("PUT", name_path("queues", name), body))[1]  # type: ignore[no-any-return]

    async def pool(self, name: str) -> PoolInfo:
        return (await self._http.request("GET", name_path("pools", name)))[1]  # type: ignore[no-any-return]

    async def set_pool(
        self,
        name: str,
        *,
        concurrency: Optional[int] = UNSET,
        adaptive: Optional[Mapping[str, int]] = UNSET,
        offline_min_share: Optional[float] = UNSET,
        **more: Any,
    ) -> PoolInfo:
        body = settings_body(dict(concurrency=concurrency, adaptive=adaptive, offline_min_share=offline_min_share, **more))
        return (await self._http.request("PUT", name_path("pools", name), body))[1]  # type: ignore[no-any-return]

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
    ) -> AsyncWorker:
        """Starts a worker on the running event loop and returns it at once (call it from async
        code). ``async def`` handlers run as tasks (``concurrency`` at once) with an
        :class:`AsyncJobContext`; plain functions run in threads with a :class:`JobContext`.
        Options as :meth:`Drove.worker`. Stop it with ``await worker.close()``."""
        return AsyncWorker(
            self._http,
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
        left = deadline - asyncio.get_running_loop().time()
        return int(min(self._long_poll_ms, max(0.0, left * 1000.0)))

    async def _submit_waiting(
        self,
        queue: str,
        payload: Any,
        options: Dict[str, Any],
        wait_ms: int,
        flight: Optional[_Flight] = None,
    ) -> Job:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, wait_ms) / 1000.0
        body = submit_body(queue, payload, options)
        repeatable = options.get("key") is not None and options.get("on_conflict") in (None, "join")
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                poll = self._poll_ms(deadline)
                job = (await self._http.request("POST", f"/v1/jobs?wait={wait_param(poll)}", body, long_poll_s=poll / 1000.0))[1]
                if flight is not None:
                    flight.job = job
                return await self._follow(job, deadline, wait_ms)
            except DroveError as err:
                pause = backoff.next()
                if not repeatable or not err.transient or loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)

    async def _follow(self, job: Job, deadline: float, timeout_after_ms: Optional[int]) -> Job:
        loop = asyncio.get_running_loop()
        path = job_path(job["id"])
        backoff = Backoff(0.05, 2.0)
        while not is_terminal(job):
            if loop.time() >= deadline:
                if timeout_after_ms is not None:
                    raise WaitTimeout(job, timeout_after_ms)
                return job
            try:
                poll = self._poll_ms(deadline)
                job = (await self._http.request("GET", f"{path}?wait={wait_param(poll)}", long_poll_s=poll / 1000.0))[1]
                backoff.reset()
            except DroveError as err:
                if not err.transient:
                    raise
                await asyncio.sleep(min(backoff.next(), max(0.0, deadline - loop.time())))
        return job
