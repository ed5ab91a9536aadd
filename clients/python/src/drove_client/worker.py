"""Workers: :class:`Worker` (started by :meth:`Drove.worker`) and :class:`AsyncWorker` (started
by :meth:`AsyncDrove.worker`), and what a handler gets, :class:`JobContext` (sync handlers) or
:class:`AsyncJobContext` (``async def`` handlers).

How handlers run (the choice a Celery, RQ or arq user would expect):

- A plain function runs in a thread of the worker's own pool: ``concurrency`` threads, created
  as needed and kept (so thread-local database connections are reused, as with Celery's
  threads pool). They are daemon threads: a handler stuck past ``close()``'s grace does not keep
  the process alive.
- An ``async def`` handler runs as a task on an event loop: the caller's loop for an
  :class:`AsyncWorker`, the worker's own loop (in a background thread) for a :class:`Worker`.
  ``concurrency`` is then the number of tasks at once.

Either way the machinery (claims, heartbeats, checkpoints, ends, riding out an outage) runs on
asyncio, in ``_engine.py``. Cancellation is cooperative: ``ctx.cancelled`` is set (with
``ctx.cancel_reason``) when the job is cancelled, its lease is lost, it times out or the worker
closes past its grace; ``ctx.sleep(seconds)`` and ``ctx.raise_if_cancelled()`` help honour it.
Only ``close()`` past its grace also cancels an ``async def`` handler's task (a thread cannot be
stopped; its result is then ignored).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue as _queue
import socket
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union, cast

from ._engine import Engine, Run, WorkerEvent, describe
from ._http import AsyncHTTP
from .errors import DroveError, WorkerClosed
from .outcomes import Classifier

__all__ = ["JobContext", "AsyncJobContext", "Worker", "AsyncWorker", "WorkerEvent", "Handler"]

Handler = Union[Callable[["JobContext"], Any], Callable[["AsyncJobContext"], Awaitable[Any]]]


class _BaseContext:
    """What every handler gets: the job and its run."""

    def __init__(self, run: Run) -> None:
        self._run = run
        #: The claimed job as the server sent it (with ``lease`` and ``lease_expires_at``).
        self.job: Dict[str, Any] = run.job
        self.id: str = run.id
        self.queue: str = run.engine.queue
        self.payload: Any = run.job.get("payload")
        #: The number of this run among the runs that used an attempt (1 on the first run).
        self.attempt: int = int(run.job.get("attempt") or 0)
        #: The checkpoint this run resumes from (the last one an earlier run saved), or None.
        self.checkpoint: Any = run.job.get("checkpoint")
        #: The run's fencing token, for the handler's own writes downstream.
        self.lease: str = run.lease

    @property
    def cancel_reason(self) -> Optional[BaseException]:
        """Why the handler should stop: :class:`JobCancelled`, :class:`LeaseLost`,
        :class:`JobTimedOut` or :class:`WorkerClosed` (None while it may go on)."""
        return self._run.reason

    def __repr__(self) -> str:
        return f"<{type(self).__name__} job={self.id} queue={self.queue} attempt={self.attempt}>"


class JobContext(_BaseContext):
    """A sync handler's context. Its methods may be called from the handler's thread (or any
    thread the handler starts)."""

    def __init__(self, run: Run, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(run)
        self._loop = loop
        #: Set when the handler should stop (see ``cancel_reason``).
        self.cancelled = threading.Event()
        run.on_cancel(lambda _reason: self.cancelled.set())

    def progress(self, done: int, total: Optional[int] = None, message: Optional[str] = None) -> None:
        """Reports progress; sent with the next heartbeat (at most one per
        ``progress_interval_ms``). Never blocks."""
        done, total = int(done), None if total is None else int(total)
        try:
            self._loop.call_soon_threadsafe(self._run.progress, done, total, message)
        except RuntimeError:
            pass  # the worker is gone

    def save_checkpoint(self, value: Any, timeout: Optional[float] = None) -> None:
        """Stores a checkpoint (any JSON); returns once the server has stored it. Raises
        :class:`LeaseLost` when the lease is gone (then nothing was stored), or
        :class:`WorkerClosed` when the worker handed the job back."""
        if self._loop.is_closed():
            raise WorkerClosed()
        try:
            future = asyncio.run_coroutine_threadsafe(self._run.save_checkpoint(value), self._loop)
        except RuntimeError:
            raise WorkerClosed() from None
        future.result(timeout)

    def raise_if_cancelled(self) -> None:
        """Raises ``cancel_reason`` if the handler should stop."""
        reason = self._run.reason
        if reason is not None:
            raise reason

    def sleep(self, seconds: float) -> None:
        """Sleeps, unless the handler should stop: then raises ``cancel_reason`` at once."""
        if self.cancelled.wait(max(0.0, seconds)):
            self.raise_if_cancelled()


class AsyncJobContext(_BaseContext):
    """An ``async def`` handler's context (use it on the worker's event loop)."""

    def __init__(self, run: Run) -> None:
        super().__init__(run)
        #: Set when the handler should stop (see ``cancel_reason``).
        self.cancelled = asyncio.Event()
        run.on_cancel(lambda _reason: self.cancelled.set())

    def progress(self, done: int, total: Optional[int] = None, message: Optional[str] = None) -> None:
        """Reports progress; sent with the next heartbeat (at most one per
        ``progress_interval_ms``)."""
        self._run.progress(int(done), None if total is None else int(total), message)

    async def save_checkpoint(self, value: Any) -> None:
        """Stores a checkpoint (any JSON); returns once the server has stored it. Raises
        :class:`LeaseLost` when the lease is gone (then nothing was stored)."""
        await self._run.save_checkpoint(value)

    def raise_if_cancelled(self) -> None:
        """Raises ``cancel_reason`` if the handler should stop."""
        reason = self._run.reason
        if reason is not None:
            raise reason

    async def sleep(self, seconds: float) -> None:
        """Sleeps, unless the handler should stop: then raises ``cancel_reason`` at once."""
        try:
            await asyncio.wait_for(self.cancelled.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            return
        self.raise_if_cancelled()


class _ThreadPool:
    """Daemon threads for sync handlers, created as needed up to ``size`` and kept."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.jobs: "_queue.SimpleQueue[Optional[Callable[[], None]]]" = _queue.SimpleQueue()
        self.threads: List[threading.Thread] = []
        #: Threads waiting for work, and work not yet taken by a thread: a thread is started
        #: whenever the work outnumbers the threads that will take it.
        self.idle = 0
        self.queued = 0
        self.lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        with self.lock:
            self.queued += 1
            if self.idle < self.queued and len(self.threads) < self.size:
                t = threading.Thread(target=self._work, name=f"{self.name}-{len(self.threads) + 1}", daemon=True)
                self.threads.append(t)
                t.start()
        self.jobs.put(fn)

    def _work(self) -> None:
        while True:
            with self.lock:
                self.idle += 1
            fn = self.jobs.get()
            with self.lock:
                self.idle -= 1
                if fn is not None:
                    self.queued -= 1
            if fn is None:
                return
            fn()

    def shutdown(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


def _is_async(handler: Any) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None))


def _resolve(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _invoker(handler: Handler, pool: _ThreadPool) -> Callable[[Run], Awaitable[Any]]:
    is_async = _is_async(handler)

    async def invoke(run: Run) -> Any:
        loop = run.loop
        if is_async:
            actx = AsyncJobContext(run)
            run.context = actx
            value = cast(Any, handler)(actx)
            if inspect.isawaitable(value):
                value = await value
            return value
        ctx = JobContext(run, loop)
        run.context = ctx
        future: "asyncio.Future[Any]" = loop.create_future()

        def work() -> None:
            ok = True
            try:
                value: Any = cast(Any, handler)(ctx)
            except BaseException as exc:  # reported as the run's failure, never lost
                ok = False
                value = exc if isinstance(exc, Exception) else RuntimeError(describe(exc))
            try:
                loop.call_soon_threadsafe(_resolve, future, ok, value)
            except RuntimeError:
                pass  # the worker's loop is gone (the job was handed back)

        pool.submit(work)
        return await future

    return invoke


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _check(queue: str, handler: Any) -> None:
    if not isinstance(queue, str) or not queue:
        raise TypeError("worker(queue, handler) needs a queue name")
    if not callable(handler):
        raise TypeError("worker(queue, handler) needs a handler function")


class Worker:
    """A running worker on one queue, for sync programs: its machinery runs on an event loop in
    a background thread, its handlers in threads (or, for ``async def`` handlers, as tasks on
    that loop). Started by :meth:`Drove.worker`; stop it with :meth:`close` (or ``with``)."""

    def __init__(
        self,
        make_http: Callable[[], AsyncHTTP],
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
    ) -> None:
        _check(queue, handler)
        self.queue = queue
        self.name = name or _default_name()
        self._settings: Dict[str, Any] = dict(
            concurrency=concurrency,
            lease_ms=lease_ms,
            name=self.name,
            poll_ms=poll_ms,
            grace_ms=grace_ms,
            progress_interval_ms=progress_interval_ms,
            batch_finish=batch_finish,
            classify=classify,
            on_event=on_event,
            stuck_after_ms=stuck_after_ms,
        )
        self._make_http = make_http
        self._pool = _ThreadPool(max(1, int(concurrency)), f"drove-{queue}")
        self._invoke = _invoker(handler, self._pool)
        self._engine: Optional[Engine] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ready = threading.Event()
        self._startup_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._main, name=f"drove-worker-{queue}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            http = self._make_http()
            engine = Engine(http, self.queue, self._invoke, **self._settings)
            engine.start()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._engine = engine
        self._ready.set()
        try:
            await asyncio.shield(engine.stopped)
        finally:
            await http.aclose()
            self._pool.shutdown()

    @property
    def running(self) -> int:
        """Handlers running now."""
        return self._engine.running if self._engine is not None else 0

    @property
    def online(self) -> bool:
        """False while the server does not answer (requests are held until it does)."""
        return self._engine.gate.online.is_set() if self._engine is not None else False

    @property
    def error(self) -> Optional[DroveError]:
        """Why the worker stopped by itself (a 401/403), or None."""
        return self._engine.fatal_error if self._engine is not None else None

    @property
    def closed(self) -> bool:
        return not self._thread.is_alive()

    def close(self, grace_ms: Optional[int] = None, timeout: Optional[float] = None) -> None:
        """Stops the worker: stops claiming at once (cancelling the pending long poll), lets
        running handlers finish for up to ``grace_ms`` (default: the worker's, 30 s), then
        releases their jobs (queued again at once, no attempt used, checkpoint kept) and sets
        their ``ctx.cancelled``. Returns once the server acknowledged every run's end.
        Calling it again is harmless."""
        loop, engine = self._loop, self._engine
        if loop is not None and engine is not None and self._thread.is_alive():
            grace = None if grace_ms is None else grace_ms / 1000.0

            async def stop() -> None:
                await engine.close(grace)

            try:
                asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout)
            except RuntimeError:
                pass  # the loop stopped meanwhile
        self._thread.join(timeout)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Blocks until the worker stops (another thread's ``close()``, or a 401/403); raises
        the error that stopped it, if any."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Worker queue={self.queue} running={self.running} closed={self.closed}>"


class AsyncWorker:
    """A running worker on one queue, on the caller's event loop: ``async def`` handlers run as
    tasks, plain functions in threads. Started by :meth:`AsyncDrove.worker`; stop it with
    ``await worker.close()`` (or ``async with``)."""

    def __init__(
        self,
        http: AsyncHTTP,
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
    ) -> None:
        _check(queue, handler)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("AsyncDrove.worker() starts a worker on the running event loop: call it from async code") from None
        self.queue = queue
        self.name = name or _default_name()
        self._pool = _ThreadPool(max(1, int(concurrency)), f"drove-{queue}")
        self._engine = Engine(
            http,
            queue,
            _invoker(handler, self._pool),
            concurrency=concurrency,
            lease_ms=lease_ms,
            name=self.name,
            poll_ms=poll_ms,
            grace_ms=grace_ms,
            progress_interval_ms=progress_interval_ms,
            batch_finish=batch_finish,
            classify=classify,
            on_event=on_event,
            stuck_after_ms=stuck_after_ms,
        )
        self._engine.start()

    @property
    def running(self) -> int:
        return self._engine.running

    @property
    def online(self) -> bool:
        """False while the server does not answer (requests are held until it does)."""
        return self._engine.gate.online.is_set()

    @property
    def error(self) -> Optional[DroveError]:
        """Why the worker stopped by itself (a 401/403), or None."""
        return self._engine.fatal_error

    @property
    def closed(self) -> bool:
        return self._engine.stopped.done()

    async def close(self, grace_ms: Optional[int] = None) -> None:
        """As :meth:`Worker.close`; an ``async def`` handler still running after the grace has
        its task cancelled too."""
        await self._engine.close(None if grace_ms is None else grace_ms / 1000.0)
        self._pool.shutdown()

    async def wait(self) -> None:
        """Waits until the worker stops; raises the error that stopped it, if any."""
        await asyncio.shield(self._engine.stopped)
        if self.error is not None:
            raise self.error

    async def __aenter__(self) -> "AsyncWorker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncWorker queue={self.queue} running={self.running} closed={self.closed}>"
