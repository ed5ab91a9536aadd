"""The worker's machinery, on asyncio: one engine serves both the sync :class:`Worker` (which
runs it on an event loop of its own, in a background thread) and the :class:`AsyncWorker`
(which runs it on the caller's loop). It mirrors the Node client's worker:

- One claim loop asks for as many jobs as there are free slots, in one long-polling request,
  and never holds more jobs than slots. ``close()`` cancels that request at once.
- Each run heartbeats every third of its lease until the server has acknowledged the run's end
  (not just until the handler returns). Progress rides on heartbeats (throttled); a checkpoint
  is sent at once and ``save_checkpoint`` returns only once the server stored it.
- A run's cancellation fires when the job is cancelled (a heartbeat says so), the lease is lost
  (409, or no heartbeat answered before it ran out), the job's timeout passes, or the worker
  closes past its grace. The handler's outcome is reported all the same: the server fences it
  by the lease.
- Run ends go many per request through ``POST /v1/jobs/finish`` (the single-run endpoints on a
  server without it); a slot is free as soon as the handler returns.

What this adds to the Node design is the :class:`Gate`: when the server stops answering, every
request of the worker (claims, heartbeats, checkpoints, ends) waits behind one probe of
``/readyz`` with capped exponential backoff and jitter, so an outage costs a few requests per
second per worker whatever the number of jobs held; when the probe is answered, everything
waiting goes again by itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set

from ._http import AsyncHTTP, Backoff, RawJSON, dumps, job_path, name_path, parse_time
from .errors import (
    DroveError,
    DroveException,
    Invalid,
    JobCancelled,
    JobTimedOut,
    LeaseLost,
    NotFound,
    WorkerClosed,
    error_from,
)
from .outcomes import Classifier, Partial, Permanent, Snooze, Throttled, Transient, default_classify

log = logging.getLogger("drove_client")

#: The smallest lease the API grants, and the longest progress message and error it takes.
MIN_LEASE_S = 1.0
MAX_MESSAGE_BYTES = 1024
MAX_ERROR_BYTES = 16 * 1024
#: Entries per finish request (the endpoint's limit), and bytes per request (well under its cap).
MAX_ENTRIES = 1000
MAX_BYTES = 8 << 20
#: Ends waiting to be sent beyond which the worker stops claiming.
MAX_PENDING_ENDS = 1000


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def describe(exc: BaseException) -> str:
    """``Name: message``, or just the message for the outcome classes and plain Exception."""
    text = str(exc)
    if isinstance(exc, (Throttled, Permanent, Snooze, Transient)) or type(exc) is Exception:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WorkerEvent:
    """What a worker tells its ``on_event`` callback.

    ``type`` is one of:
    - ``completed``: the server stored the success (``result``, ``state``);
    - ``failed``: the server stored the failure (``error`` the handler raised, ``kind``, and
      ``state`` where the job went: ``scheduled``/``queued`` to run again, ``failed``,
      ``cancelled``);
    - ``released``: the job was handed back unrun (close past its grace);
    - ``refused``: the server refused the end of the run (``error``: the lease was lost, another
      run owns the job now, or it timed out); nothing was changed;
    - ``error``: a request failed (``error``); the worker keeps trying;
    - ``offline``: the server stopped answering (``error``: the first failure); requests wait;
    - ``online``: the server answers again (``ms``: how long it did not);
    - ``stuck``: a handler still runs ``stuck_after_ms`` after it was told to stop (``error``:
      why it was told, ``ms``: since when); it keeps its slot until it returns;
    - ``stopped``: the worker stopped for good (``error``: a 401/403), or closed (no error).
    """

    __slots__ = ("type", "job", "state", "kind", "error", "result", "ms")

    def __init__(
        self,
        type: str,
        job: Optional[Dict[str, Any]] = None,
        *,
        state: Optional[str] = None,
        kind: Optional[str] = None,
        error: Optional[BaseException] = None,
        result: Any = None,
        ms: Optional[int] = None,
    ) -> None:
        self.type = type
        self.job = job
        self.state = state
        self.kind = kind
        self.error = error
        self.result = result
        self.ms = ms

    def __repr__(self) -> str:
        job = self.job.get("id") if self.job else None
        return f"WorkerEvent({self.type!r}, job={job!r}, state={self.state!r}, kind={self.kind!r}, error={self.error!r})"


class Gate:
    """Whether the server answers. A request that got no usable answer (unreachable, 502, 503,
    504, 429) closes the gate; one probe (``GET /readyz``) then tries, with capped exponential
    backoff and jitter, until the server answers, and opens it again. Everything else waits."""

    def __init__(self, http: AsyncHTTP, queue: str, emit: Callable[[WorkerEvent], None]) -> None:
        self.http = http
        self.queue = queue
        self.emit = emit
        self.online = asyncio.Event()
        self.online.set()
        self.loop = asyncio.get_running_loop()
        # As the Node client: about 0.1 s, 0.2 s, 0.4 s... up to 1 s between probes, so a lease
        # of a few seconds survives a short outage and a long one costs about a request a second.
        self.backoff = Backoff(0.1, 1.0)
        self.online_since = self.loop.time()
        self.offline_since = 0.0
        self.probe: Optional["asyncio.Task[None]"] = None
        self.closed = False

    def down(self, err: BaseException) -> None:
        if not self.online.is_set() or self.closed:
            return
        self.online.clear()
        # A gate that flaps (open, then shut again at once) keeps backing off.
        if self.loop.time() - self.online_since > 10.0:
            self.backoff.reset()
        self.offline_since = self.loop.time()
        log.warning("drove worker %s: the server does not answer (%s); holding requests until it does", self.queue, err)
        self.emit(WorkerEvent("offline", error=err))
        self.probe = asyncio.ensure_future(self._probe())

    async def _probe(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.backoff.next())
            try:
                await self.http.request("GET", "/readyz", timeout_s=5.0)
            except DroveError as err:
                if err.transient:
                    continue
                # Any other answer (a proxy without /readyz) still means the server is there.
            except Exception:  # an answer that is not even HTTP: not there yet
                continue
            break
        self.online_since = self.loop.time()
        self.online.set()
        if not self.closed:
            ms = int((self.online_since - self.offline_since) * 1000)
            log.warning("drove worker %s: the server answers again (after %d ms)", self.queue, ms)
            self.emit(WorkerEvent("online", ms=ms))

    async def wait(self, timeout: Optional[float] = None) -> bool:
        if self.online.is_set():
            return True
        try:
            await asyncio.wait_for(self.online.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.closed = True
        if self.probe is not None:
            self.probe.cancel()
        self.online.set()


class Ending:
    """What one run ended with: ``complete`` (result, partial), ``fail`` (message, kind,
    retry_after_ms) or ``release``."""

    __slots__ = ("action", "result", "partial", "message", "kind", "retry_after_ms")

    def __init__(
        self,
        action: str,
        *,
        result: Any = None,
        partial: bool = False,
        message: str = "",
        kind: str = "retryable",
        retry_after_ms: Optional[int] = None,
    ) -> None:
        self.action = action
        self.result = result
        self.partial = partial
        self.message = message
        self.kind = kind
        self.retry_after_ms = retry_after_ms

    def wire(self) -> Dict[str, Any]:
        """The body of the single-run endpoint (without the lease)."""
        if self.action == "complete":
            out: Dict[str, Any] = {"result": self.result}
            if self.partial:
                out["partial"] = True
            return out
        if self.action == "fail":
            out = {"error": {"message": self.message, "kind": self.kind}}
            if self.retry_after_ms is not None:
                out["retry_after_ms"] = self.retry_after_ms
            return out
        return {}


class Settled:
    """The server's answer for one run's end: the job's new ``state``, or ``error``."""

    __slots__ = ("state", "error")

    def __init__(self, state: Optional[str] = None, error: Optional[DroveException] = None) -> None:
        self.state = state
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None


class _Checkpoint:
    __slots__ = ("value", "waiters")

    def __init__(self, value: Any, waiters: "List[asyncio.Future[None]]") -> None:
        self.value = value
        self.waiters = waiters


def _settle_waiters(waiters: "List[asyncio.Future[None]]", error: Optional[BaseException]) -> None:
    for w in waiters:
        if not w.done():
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)


class Run:
    """One run of one job: its lease, heartbeats, progress, checkpoints and cancellation.
    Exactly one heartbeat is in flight at a time; what arrives meanwhile goes in the next."""

    def __init__(self, engine: "Engine", job: Dict[str, Any], answered_at: float) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.job = job
        self.id = str(job["id"])
        self.lease = str(job.get("lease"))
        granted = None
        expires, started = parse_time(job.get("lease_expires_at")), parse_time(job.get("started_at"))
        if expires is not None and started is not None and expires > started:
            granted = expires - started
        asked = engine.lease_ms / 1000.0 if engine.lease_ms is not None else None
        self.lease_s = max(MIN_LEASE_S, asked or granted or 10.0)
        self.every = max(0.1, self.lease_s / 3.0)
        self.next_beat_at = answered_at + self.every
        self.last_sent_at = 0.0
        self.lost = False
        self.over = False
        self.released = False
        self.handler_done = False
        self.reason: Optional[BaseException] = None
        self.listeners: List[Callable[[BaseException], None]] = []
        self.progress_out: Optional[Dict[str, Any]] = None
        self.checkpoint_out: Optional[_Checkpoint] = None
        self.checkpoint_sending: Optional[_Checkpoint] = None
        self.wake = asyncio.Event()
        self.settled: "asyncio.Future[None]" = self.loop.create_future()
        self.ended: "asyncio.Future[None]" = self.loop.create_future()
        self.task: Optional["asyncio.Task[None]"] = None
        self.beat_task: Optional["asyncio.Task[None]"] = None
        self.deadline: Optional[asyncio.TimerHandle] = None
        self.timeout: Optional[asyncio.TimerHandle] = None
        self.context: Any = None
        self._arm_deadline(answered_at + self.lease_s)

    # ---- life

    def begin(self) -> None:
        timeout_ms = self.job.get("timeout_ms")
        if isinstance(timeout_ms, (int, float)) and timeout_ms > 0:
            # The server times the run from its claim, a moment before the answer reached us.
            self.timeout = self.loop.call_later(timeout_ms / 1000.0, self.abort, JobTimedOut(self.id, int(timeout_ms)))
        self.beat_task = asyncio.ensure_future(self._beat_loop())

    @property
    def expected_refusal(self) -> bool:
        """The worker already knows the lease is gone: a refused end is no news."""
        return self.lost or isinstance(self.reason, JobTimedOut)

    def on_cancel(self, listener: Callable[[BaseException], None]) -> None:
        self.listeners.append(listener)
        if self.reason is not None:
            listener(self.reason)

    def abort(self, reason: BaseException) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        if not self.handler_done and self.engine.stuck_after_s > 0:
            self.loop.call_later(self.engine.stuck_after_s, self._stuck, self.loop.time())
        for listener in self.listeners:
            try:
                listener(reason)
            except Exception:  # a listener must not break the worker
                log.exception("drove worker: a cancellation listener failed")

    def _stuck(self, told_at: float) -> None:
        if self.handler_done or self.released:
            return
        ms = int((self.loop.time() - told_at) * 1000)
        log.warning("drove worker %s: the handler of job %s still runs %d ms after it was told to stop (%s)", self.engine.queue, self.id, ms, self.reason)
        self.engine.emit(WorkerEvent("stuck", self.job, error=self.reason, ms=ms))

    def handler_settled(self) -> None:
        self.handler_done = True
        if self.timeout is not None:
            self.timeout.cancel()
        self.progress_out = None
        if not self.settled.done():
            self.settled.set_result(None)

    def finished(self) -> None:
        """The server acknowledged (or refused) the run's end: heartbeats stop."""
        if self.over:
            return
        self.over = True
        self._stop_beats()
        for handle in (self.deadline, self.timeout):
            if handle is not None:
                handle.cancel()
        self._fail_checkpoints(LeaseLost(self.id, f"job {self.id}: the run has ended; the checkpoint was not stored", None))
        if not self.ended.done():
            self.ended.set_result(None)

    def lose_lease(self, err: LeaseLost) -> None:
        if self.lost or self.over:
            return
        self.lost = True
        if self.deadline is not None:
            self.deadline.cancel()
        self._stop_beats()
        self.abort(err)
        self._fail_checkpoints(self.reason or err)

    def _stop_beats(self) -> None:
        task = self.beat_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    def _fail_checkpoints(self, err: BaseException) -> None:
        for pending in (self.checkpoint_out, self.checkpoint_sending):
            if pending is not None:
                _settle_waiters(pending.waiters, err)
        self.checkpoint_out = None

    def _arm_deadline(self, at: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        if self.over:
            return
        self.deadline = self.loop.call_at(at, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self.lose_lease(LeaseLost(self.id, f"job {self.id}: no heartbeat was answered before the lease ran out", None))

    # ---- what the handler calls (on the loop)

    def progress(self, done: Any, total: Any = None, message: Any = None) -> None:
        if self.handler_done or self.over or self.lost:
            return
        self.progress_out = {
            "done": int(done or 0),
            "total": None if total is None else int(total),
            "message": None if message is None else truncate(str(message), MAX_MESSAGE_BYTES),
        }
        self.wake.set()

    async def save_checkpoint(self, value: Any) -> None:
        if self.lost:
            raise self.reason or LeaseLost(self.id)
        if self.released:
            raise WorkerClosed()
        if self.over or self.handler_done:
            raise RuntimeError(f"job {self.id}: save_checkpoint after the handler returned")
        dumps(value)  # not JSON: refused here, before it can spoil a heartbeat
        waiter: "asyncio.Future[None]" = self.loop.create_future()
        if self.checkpoint_out is not None:
            self.checkpoint_out.value = value
            self.checkpoint_out.waiters.append(waiter)
        else:
            self.checkpoint_out = _Checkpoint(value, [waiter])
        self.wake.set()
        await waiter

    # ---- heartbeats

    async def _beat_loop(self) -> None:
        gate = self.engine.gate
        while not self.over and not self.lost:
            now = self.loop.time()
            due = self.next_beat_at
            if self.progress_out is not None:
                due = min(due, self.last_sent_at + self.engine.progress_interval_s)
            if self.checkpoint_out is not None:
                due = now
            if due > now:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), due - now)
                except asyncio.TimeoutError:
                    pass
                continue
            if not gate.online.is_set():
                await gate.wait()
                continue
            await self._beat()

    async def _beat(self) -> None:
        engine = self.engine
        sent_at = self.loop.time()
        self.last_sent_at = sent_at
        body: Dict[str, Any] = {"lease": self.lease}
        if engine.lease_ms is not None:
            body["lease_ms"] = engine.lease_ms
        progress, checkpoint = self.progress_out, self.checkpoint_out
        self.progress_out = None
        self.checkpoint_out = None
        if progress is not None:
            body["progress"] = progress
        if checkpoint is not None:
            body["checkpoint"] = checkpoint.value
        self.checkpoint_sending = checkpoint
        retry_in = self.every
        try:
            _, ack = await engine.http.request(
                "POST", job_path(self.id, "heartbeat"), body, job_id=self.id, timeout_s=max(1.0, self.lease_s)
            )
            self.checkpoint_sending = None
            self._arm_deadline(sent_at + self.lease_s)
            if checkpoint is not None:
                _settle_waiters(checkpoint.waiters, None)
            if isinstance(ack, dict) and ack.get("cancel_requested") and not self.handler_done:
                self.abort(JobCancelled(self.id))
        except (LeaseLost, NotFound) as err:
            self.checkpoint_sending = None
            lost = err if isinstance(err, LeaseLost) else LeaseLost(self.id, err.message, err.status)
            self.lose_lease(lost)
            if checkpoint is not None:
                _settle_waiters(checkpoint.waiters, self.reason or lost)
        except DroveError as err:
            self.checkpoint_sending = None
            if err.status in (401, 403):
                if checkpoint is not None:
                    _settle_waiters(checkpoint.waiters, err)
                engine.fatal(err)
                retry_in = self.every
            elif err.transient:
                # No answer: the gate holds this run until the server answers, then it goes
                # again at once, carrying what this one carried unless newer came meanwhile.
                engine.gate.down(err)
                if checkpoint is not None:
                    if self.checkpoint_out is not None:
                        self.checkpoint_out.waiters[:0] = checkpoint.waiters
                    else:
                        self.checkpoint_out = checkpoint
                if progress is not None and self.progress_out is None:
                    self.progress_out = progress
                retry_in = 0.0
            else:
                # The server refused what this heartbeat carried (a checkpoint over the size
                # limit): that save fails; the lease still needs a plain heartbeat, soon.
                if checkpoint is not None:
                    _settle_waiters(checkpoint.waiters, err)
                engine.report(err)
                retry_in = 0.0 if (checkpoint is not None or progress is not None) else min(1.0, self.every)
        except Exception as err:  # not expected (a bug, an odd answer): keep the lease alive
            self.checkpoint_sending = None
            if checkpoint is not None:
                _settle_waiters(checkpoint.waiters, err)
            engine.report(err)
            retry_in = min(1.0, self.every)
        self.next_beat_at = sent_at + retry_in


Invoker = Callable[[Run], Awaitable[Any]]


class Finisher:
    """Sends the ends of runs, many per request. While one request is out, the ends that arrive
    wait and go together in the next, so a busy worker sends one request per batch and an idle
    one sends at once. A server without ``/v1/jobs/finish`` (404/405) gets the single-run
    endpoints; a server without the ``transient`` kind (422) gets ``retryable`` instead."""

    _ENTRY_FIELD = re.compile(r"^jobs\[(\d+)\]\.?(.*)$")

    def __init__(self, engine: "Engine", parallel: int, batch: bool) -> None:
        self.engine = engine
        self.parallel = parallel
        self.batch_endpoint = batch
        self.waiting: List["_Entry"] = []
        self.requests = 0
        self.sending = 0
        self.scheduled = False
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def pending(self) -> int:
        return len(self.waiting) + self.sending

    def end(self, run: Run, ending: Ending) -> "asyncio.Future[Settled]":
        future: "asyncio.Future[Settled]" = self.engine.loop.create_future()
        entry = _Entry(run, ending, future)
        try:
            entry.encode(self.engine.transient_supported)
        except (TypeError, ValueError) as err:
            # A result JSON cannot hold: refused here as the server would.
            future.set_result(Settled(error=Invalid(None, "invalid_value", f"job {run.id}: the result is not JSON ({err})", "result")))
            return future
        self.waiting.append(entry)
        self.idle.clear()
        self._schedule()
        return future

    async def drained(self) -> None:
        await self.idle.wait()

    def _schedule(self) -> None:
        if self.scheduled or self.requests >= self.parallel or not self.waiting:
            return
        self.scheduled = True
        # Ends that arrive in the same turn of the loop (a claim's worth of quick handlers)
        # go in one request.
        self.engine.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        while self.requests < self.parallel and self.waiting:
            batch: List[_Entry] = []
            size = 0
            while len(batch) < MAX_ENTRIES and self.waiting:
                nxt = self.waiting[0]
                if batch and size + len(nxt.json) > MAX_BYTES:
                    break
                size += len(nxt.json) + 1
                batch.append(self.waiting.pop(0))
            self.requests += 1
            self.sending += len(batch)
            task = asyncio.ensure_future(self._send(batch))
            task.add_done_callback(functools.partial(self._sent, count=len(batch)))

    def _sent(self, task: "asyncio.Task[None]", count: int) -> None:
        self.requests -= 1
        self.sending -= count
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            self.engine.report(failure)
        self._schedule()
        if self.pending == 0:
            self.idle.set()

    async def _send(self, batch: List["_Entry"]) -> None:
        engine = self.engine
        tries = 0
        single = False  # this batch goes entry by entry (its request was too large)
        try:
            while batch:
                # Every end is sent once, whatever the worker believes about its lease: the
                # server decides (and fences). Tries after a failed one (or one held by an
                # outage) stop once the run's lease is gone.
                keep = []
                for e in batch:
                    if e.future.done():
                        continue
                    if tries > 0 and (e.run.lost or engine.stopped_for_good):
                        e.settle(Settled(error=engine.fatal_error or LeaseLost(e.run.id)))
                        continue
                    keep.append(e)
                batch = keep
                if not batch:
                    return
                if not engine.gate.online.is_set():
                    tries += 1
                    await engine.gate.wait(0.25)
                    continue
                try:
                    if self.batch_endpoint and not single:
                        await self._send_batch(batch)
                    else:
                        results = await asyncio.gather(*(self._send_one(e) for e in batch), return_exceptions=True)
                        for r in results:
                            if isinstance(r, BaseException):
                                raise r
                    return
                except DroveError as err:
                    if err.status in (404, 405) and self.batch_endpoint:
                        self.batch_endpoint = False  # an older server: the single-run endpoints
                        continue
                    if err.status == 422 and self._entry_refused(batch, err):
                        continue
                    if err.status == 413 and len(batch) > 1 and not single:
                        single = True
                        continue
                    if err.status in (401, 403):
                        engine.fatal(err)
                        for e in batch:
                            e.settle(Settled(error=err))
                        return
                    if not err.transient:
                        for e in batch:
                            e.settle(Settled(error=err))
                        return
                    engine.gate.down(err)
                    tries += 1
        finally:
            for e in batch:
                e.settle(Settled(error=WorkerClosed("the worker stopped before the end was sent")))

    def _entry_refused(self, batch: List["_Entry"], err: DroveError) -> bool:
        """A 422 naming one entry (``jobs[3].error.kind``): a ``transient`` kind the server does
        not know goes again as ``retryable``; any other refusal settles that entry alone."""
        match = self._ENTRY_FIELD.match(err.field or "")
        if match is None or int(match.group(1)) >= len(batch):
            return False
        entry = batch[int(match.group(1))]
        if match.group(2) == "error.kind" and entry.ending.kind == "transient":
            self._no_transient(batch)
            return True
        entry.settle(Settled(error=err))
        return True

    def _no_transient(self, batch: List["_Entry"]) -> None:
        if self.engine.transient_supported:
            log.warning("drove worker %s: the server does not know the 'transient' kind; sending 'retryable'", self.engine.queue)
        self.engine.transient_supported = False
        for e in batch + self.waiting:
            e.encode(False)

    async def _send_batch(self, batch: List["_Entry"]) -> None:
        body = RawJSON(b'{"jobs":[' + b",".join(e.json for e in batch) + b"]}")
        _, answer = await self.engine.http.request("POST", "/v1/jobs/finish", body)
        rows = answer.get("jobs") if isinstance(answer, dict) else None
        rows = rows if isinstance(rows, list) else []
        for i, e in enumerate(batch):
            row = rows[i] if i < len(rows) and isinstance(rows[i], dict) else {}
            if row.get("state"):
                e.settle(Settled(state=str(row["state"])))
            else:
                e.settle(Settled(error=_entry_error(e.run.id, row.get("error"))))

    async def _send_one(self, e: "_Entry") -> None:
        body = {"lease": e.run.lease, **e.wire}
        path = job_path(e.run.id, e.ending.action)
        while True:
            try:
                _, job = await self.engine.http.request("POST", path, body, job_id=e.run.id)
                e.settle(Settled(state=str(job.get("state")) if isinstance(job, dict) else None))
                return
            except DroveError as err:
                if err.transient or err.status in (401, 403):
                    raise  # the whole batch is tried again (or the worker stops)
                if err.status == 422 and err.field == "error.kind" and e.ending.kind == "transient":
                    self._no_transient([e])
                    body = {"lease": e.run.lease, **e.wire}
                    continue
                e.settle(Settled(error=err))
                return


class _Entry:
    __slots__ = ("run", "ending", "future", "json", "wire")

    def __init__(self, run: Run, ending: Ending, future: "asyncio.Future[Settled]") -> None:
        self.run = run
        self.ending = ending
        self.future = future
        self.json = b""
        self.wire: Dict[str, Any] = {}

    def encode(self, transient: bool) -> None:
        if self.ending.action == "fail" and self.ending.kind == "transient" and not transient:
            self.ending.kind = "retryable"
        self.wire = self.ending.wire()
        entry: Dict[str, Any] = {"id": self.run.id, "lease": self.run.lease, **self.wire}
        if self.ending.action == "release":
            entry["release"] = True
        self.json = dumps(entry)

    def settle(self, settled: Settled) -> None:
        if not self.future.done():
            self.future.set_result(settled)


_CODE_STATUS = {"not_found": 404, "payload_too_large": 413, "invalid_value": 422, "wrong_state": 409, "lease_lost": 409}


def _entry_error(job_id: str, error: Any) -> DroveError:
    if not isinstance(error, dict):
        return DroveError(None, "bad_answer", f"job {job_id}: the server's answer has no entry for it")
    code = str(error.get("code") or "unknown")
    status = _CODE_STATUS.get(code, 0)
    return error_from(status, {"error": {**error, "message": str(error.get("message") or code)}}, "finish", job_id)


class Engine:
    """Claims, runs, heartbeats and ends jobs of one queue on the running event loop."""

    def __init__(
        self,
        http: AsyncHTTP,
        queue: str,
        invoke: Invoker,
        *,
        concurrency: int,
        lease_ms: Optional[int],
        name: str,
        poll_ms: int,
        grace_ms: int,
        progress_interval_ms: int,
        batch_finish: bool,
        classify: Optional[Classifier],
        on_event: Optional[Callable[[WorkerEvent], None]],
        stuck_after_ms: int = 10_000,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.http = http
        self.queue = queue
        self.invoke = invoke
        self.concurrency = max(1, int(concurrency))
        self.lease_ms = None if lease_ms is None else int(lease_ms)
        self.name = name
        self.poll_ms = min(60_000, max(0, int(poll_ms)))
        self.grace_s = max(0.0, grace_ms / 1000.0)
        self.progress_interval_s = max(0.0, progress_interval_ms / 1000.0)
        self.classify = classify
        self.on_event = on_event
        self.stuck_after_s = max(0.0, stuck_after_ms / 1000.0)
        self.gate = Gate(http, queue, self.emit)
        self.finisher = Finisher(self, 2, batch_finish)
        self.transient_supported = True
        #: Runs whose handler has not returned yet (these hold slots). A set, not a map by job
        #: id: a zombie run (lease lost, handler still going) and the job's next run may both
        #: be here.
        self.handling: Set[Run] = set()
        #: Runs whose end the server has not acknowledged yet (these heartbeat).
        self.live: Set[Run] = set()
        self.reserved = 0
        self.closing = False
        self.fatal_error: Optional[DroveError] = None
        self.stopped_for_good = False
        self.wake = asyncio.Event()
        self.claim_task: Optional["asyncio.Task[None]"] = None
        self.close_task: Optional["asyncio.Task[None]"] = None
        self.stopped: "asyncio.Future[None]" = self.loop.create_future()

    def start(self) -> None:
        self.claim_task = asyncio.ensure_future(self._claim_loop())

    @property
    def running(self) -> int:
        return len(self.handling)

    # ---- stopping

    def close(self, grace_s: Optional[float] = None) -> "asyncio.Task[None]":
        if self.close_task is None:
            self.close_task = asyncio.ensure_future(self._shutdown(self.grace_s if grace_s is None else max(0.0, grace_s)))
        return self.close_task

    async def _shutdown(self, grace_s: float) -> None:
        try:
            self.closing = True
            self.wake.set()
            if self.claim_task is not None:
                self.claim_task.cancel()
                await asyncio.gather(self.claim_task, return_exceptions=True)
            if self.handling and grace_s > 0:
                await asyncio.wait([r.settled for r in self.handling], timeout=grace_s)
            for run in list(self.handling):
                self._release(run)
            while self.live:
                await asyncio.gather(*(r.ended for r in list(self.live)))
            await self.finisher.drained()
        finally:
            self.gate.close()
            self.emit(WorkerEvent("stopped", error=self.fatal_error))
            if not self.stopped.done():
                self.stopped.set_result(None)

    def fatal(self, err: DroveError) -> None:
        """A 401/403: the worker cannot do anything; it stops for good."""
        if self.fatal_error is not None:
            return
        self.fatal_error = err
        self.stopped_for_good = True
        log.error("drove worker %s stops: the server refused its credentials (%s)", self.queue, err)
        for run in list(self.handling):
            stop = WorkerClosed(f"the worker stopped: {err}")
            stop.__cause__ = err
            run.abort(stop)
        for run in list(self.live):
            run.lose_lease(LeaseLost(run.id, f"job {run.id}: the worker stopped ({err.message})", err.status))
        self.close(0.0)

    # ---- claiming

    def _free(self) -> int:
        if self.finisher.pending >= MAX_PENDING_ENDS:
            return 0
        return self.concurrency - len(self.handling) - self.reserved

    def _slot_freed(self) -> None:
        self.wake.set()

    async def _claim_loop(self) -> None:
        path = name_path("queues", self.queue, "claim")
        backoff = Backoff(0.1, 5.0)
        while not self.closing:
            self.wake.clear()
            free = self._free()
            if free <= 0:
                await self.wake.wait()
                continue
            if not self.gate.online.is_set():
                await self.gate.wait()
                continue
            body: Dict[str, Any] = {"worker": self.name, "max": free, "wait_ms": self.poll_ms}
            if self.lease_ms is not None:
                body["lease_ms"] = self.lease_ms
            self.reserved += free
            try:
                _, answer = await self.http.request("POST", path, body, long_poll_s=self.poll_ms / 1000.0)
                backoff.reset()
            except DroveError as err:
                if self.closing:
                    break
                if err.status in (401, 403):
                    self.fatal(err)
                    break
                if err.transient:
                    self.gate.down(err)
                    continue
                # A refused claim (a bad lease_ms) will not get better by itself, but an
                # operator may fix the queue: keep trying, slowly.
                self.report(err)
                await asyncio.sleep(backoff.next())
                continue
            except Exception as err:  # not expected: never let it stop the claiming
                self.report(err)
                await asyncio.sleep(backoff.next())
                continue
            finally:
                self.reserved -= free
            answered_at = self.loop.time()
            jobs = answer.get("jobs") if isinstance(answer, dict) else None
            for job in jobs if isinstance(jobs, list) else []:
                self._start(job, answered_at)

    # ---- running

    def _start(self, job: Dict[str, Any], answered_at: float) -> None:
        run = Run(self, job, answered_at)
        self.handling.add(run)
        self.live.add(run)
        if self.closing:
            self._release(run)  # claimed as close() began: hand it back unrun
            return
        run.begin()
        run.task = asyncio.ensure_future(self._execute(run))

    async def _execute(self, run: Run) -> None:
        thrown: Optional[BaseException] = None
        try:
            try:
                value = await self.invoke(run)
            except asyncio.CancelledError:
                if run.released:
                    return  # close() past its grace handed the job back and stopped the handler
                raise
            except Exception as exc:
                ending = self._failure(exc, run)
                value, thrown = None, exc
            else:
                if isinstance(value, Partial):
                    value = value.value
                    ending = Ending("complete", result=value, partial=True)
                else:
                    ending = Ending("complete", result=value)
            finally:
                run.handler_settled()
                self.handling.discard(run)
                self._slot_freed()
            if run.released:
                return
            answer = await self.finisher.end(run, ending)
            if not answer.ok and ending.action == "complete" and getattr(answer.error, "code", None) in ("payload_too_large", "invalid_value"):
                # The result cannot be stored; a retry would compute the same one.
                thrown = Permanent(f"the handler's result was refused: {answer.error}")
                ending = Ending("fail", message=str(thrown), kind="permanent")
                answer = await self.finisher.end(run, ending)
            self._retire(run)
            self._announce(run, ending, answer, value, thrown)
        except asyncio.CancelledError:
            self._retire(run)
            raise
        except Exception as err:  # not expected: never let it take the worker down
            self.report(err)
            self.handling.discard(run)
            self._retire(run)

    def _failure(self, exc: BaseException, run: Run) -> Ending:
        """What a handler's exception tells the server."""
        message = truncate(describe(exc), MAX_ERROR_BYTES)
        outcome: Any = exc
        if not isinstance(exc, (Throttled, Permanent, Snooze, Transient)):
            outcome = None
            if self.classify is not None:
                try:
                    outcome = self.classify(exc)
                except Exception as err:
                    log.warning("drove worker %s: classify() failed: %r", self.queue, err)
            if outcome is None:
                outcome = default_classify(exc)
        if isinstance(outcome, Throttled) or outcome == "throttled":
            ms = _ms(outcome.retry_after_ms) if isinstance(outcome, Throttled) else None
            return Ending("fail", message=message, kind="throttled", retry_after_ms=ms)
        if isinstance(outcome, Snooze):
            return Ending("fail", message=message, kind="snooze", retry_after_ms=_ms(outcome.ms))
        if isinstance(outcome, Permanent) or outcome == "permanent":
            return Ending("fail", message=message, kind="permanent")
        if isinstance(outcome, Transient) or outcome == "transient":
            return Ending("fail", message=message, kind="transient")
        if not isinstance(exc, (JobCancelled, LeaseLost, JobTimedOut, WorkerClosed)):
            log.warning("drove worker %s: job %s failed: %s", self.queue, run.id, message, exc_info=exc)
        return Ending("fail", message=message, kind="retryable")

    def _retire(self, run: Run) -> None:
        run.finished()
        self.live.discard(run)
        self._slot_freed()

    def _release(self, run: Run) -> None:
        """Hands a run's job back to the queue (close() past its grace)."""
        if run.released:
            return
        run.released = True
        self.handling.discard(run)
        run.abort(WorkerClosed())
        run._fail_checkpoints(WorkerClosed())
        if run.task is not None and not run.task.done():
            run.task.cancel()
        future = self.finisher.end(run, Ending("release"))

        def released(f: "asyncio.Future[Settled]") -> None:
            self._retire(run)
            self._announce(run, Ending("release"), f.result(), None, None)

        future.add_done_callback(released)

    def _announce(self, run: Run, ending: Ending, answer: Settled, result: Any, thrown: Optional[BaseException]) -> None:
        if not answer.ok:
            if not run.expected_refusal and not self.stopped_for_good:
                log.warning("drove worker %s: the end of job %s's run was refused: %s", self.queue, run.id, answer.error)
            self.emit(WorkerEvent("refused", run.job, error=answer.error))
            return
        if ending.action == "complete":
            self.emit(WorkerEvent("completed", run.job, state=answer.state, result=result))
        elif ending.action == "fail":
            self.emit(WorkerEvent("failed", run.job, state=answer.state, kind=ending.kind, error=thrown))
        else:
            self.emit(WorkerEvent("released", run.job, state=answer.state))

    def report(self, err: BaseException) -> None:
        log.warning("drove worker %s: %s", self.queue, err)
        self.emit(WorkerEvent("error", error=err))

    def emit(self, event: WorkerEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("drove worker %s: on_event failed", self.queue)


def _ms(value: Any) -> Optional[int]:
    if isinstance(value, (int, float)) and value == value and value >= 0 and value != float("inf"):
        return int(round(value))
    return None
