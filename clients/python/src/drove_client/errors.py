"""Errors: what the server said (:class:`DroveError` and one subclass per contract code), what an
awaited job ended with (:class:`JobFailed`, :class:`WaitTimeout`), and why a handler was asked
to stop (:class:`JobCancelled`, :class:`LeaseLost`, :class:`JobTimedOut`, :class:`WorkerClosed`).

Every exception this package raises derives from :class:`DroveException`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Type

if TYPE_CHECKING:
    from .types import Job

__all__ = [
    "DroveException",
    "DroveError",
    "Unreachable",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "KeyConflict",
    "LeaseLost",
    "WrongState",
    "PayloadTooLarge",
    "Invalid",
    "TooManyRequests",
    "Unavailable",
    "ServerError",
    "JobFailed",
    "WaitTimeout",
    "JobCancelled",
    "JobTimedOut",
    "WorkerClosed",
    "error_from",
]


class DroveException(Exception):
    """The base of every exception raised by drove_client."""

    def __reduce__(self) -> Any:
        # Copies and pickles keep every attribute, whatever the subclass's constructor takes.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: Type[DroveException], args: Any, state: Dict[str, Any]) -> DroveException:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class DroveError(DroveException):
    """A request the server refused, or one that got no answer.

    ``status`` is the HTTP status (``None`` when the server did not answer), ``code`` the
    contract's snake_case code (``invalid_value``, ``not_found``, ``lease_lost``...; a server
    that did not answer is ``unreachable``), ``field`` the offending field of a 413/422
    (``"priority"``, ``"jobs[3].queue"``), ``message`` the server's human words.
    """

    def __init__(
        self,
        status: Optional[int],
        code: str,
        message: str,
        field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @property
    def transient(self) -> bool:
        """Worth trying again: no answer, or the server is unavailable or overloaded."""
        return self.status is None or self.status in (429, 502, 503, 504)

    def __repr__(self) -> str:
        extra = f", field={self.field!r}" if self.field else ""
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r}{extra})"


class Unreachable(DroveError):
    """The server did not answer (connection refused or reset, a timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "unreachable", message)


class BadRequest(DroveError):
    """400: a malformed request (not JSON, an unreadable cursor, a bad ``?wait=``)."""


class Unauthorized(DroveError):
    """401: the server needs a token (``Drove(url, token=...)``) and got none or a wrong one."""


class Forbidden(DroveError):
    """403: the request is refused whatever the token (a cross-origin browser request)."""


class NotFound(DroveError):
    """404: no such job, queue or pool."""


class Conflict(DroveError):
    """409: the request conflicts with the job's state."""


class KeyConflict(Conflict):
    """409 ``key_conflict``: ``on_conflict="reject"`` met an active job with the same key."""


class WrongState(Conflict):
    """409 ``wrong_state``: cancel of a finished job, retry of one that has not failed."""


class LeaseLost(Conflict):
    """The run's lease is not the job's current lease any more (it expired, the job timed out,
    or another worker runs it now): the server changed nothing.

    Raised by the server (409 ``lease_lost``) and by the worker itself when no heartbeat was
    answered before the lease ran out (then ``status`` is ``None``). Also the
    ``ctx.cancel_reason`` of a handler whose lease is gone, and what a pending
    ``save_checkpoint`` raises then.
    """

    def __init__(
        self,
        job_id: str,
        message: Optional[str] = None,
        status: Optional[int] = 409,
    ) -> None:
        super().__init__(
            status,
            "lease_lost",
            message or f"job {job_id}: the lease was lost; the server changed nothing",
        )
        self.job_id = job_id


class PayloadTooLarge(DroveError):
    """413: a payload, result or checkpoint over the server's size limit (``field`` says which)."""


class Invalid(DroveError):
    """422 ``invalid_value``: a value out of bounds or of the wrong type; ``field`` names it."""


class TooManyRequests(DroveError):
    """429: the server itself pushed back; try again later."""


class Unavailable(DroveError):
    """503 (or 502/504 from a proxy): the server's store is unavailable for now."""


class ServerError(DroveError):
    """500: a server bug (the contract says this never happens)."""


_BY_CODE: Dict[str, Type[DroveError]] = {
    "key_conflict": KeyConflict,
    "wrong_state": WrongState,
    "invalid_value": Invalid,
    "payload_too_large": PayloadTooLarge,
    "malformed_request": BadRequest,
    "not_found": NotFound,
    "unauthorized": Unauthorized,
    "store_unavailable": Unavailable,
}

_BY_STATUS: Dict[int, Type[DroveError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Invalid,
    429: TooManyRequests,
    500: ServerError,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from(status: int, body: Any, what: str, job_id: Optional[str] = None) -> DroveError:
    """The API's error body (``{"error": {code, message, field?}}``) as the fitting class."""
    inner = body.get("error") if isinstance(body, dict) else None
    err: Dict[str, Any] = inner if isinstance(inner, dict) else {}
    code = str(err["code"]) if isinstance(err.get("code"), str) else f"http_{status}"
    message = str(err["message"]) if isinstance(err.get("message"), str) else f"{what} answered {status}"
    field = str(err["field"]) if isinstance(err.get("field"), str) else None
    if code == "lease_lost":
        return LeaseLost(job_id or "", f"job {job_id}: {message}" if job_id else message, status)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or DroveError
    return cls(status, code, message, field)


class JobFailed(DroveException):
    """The awaited job failed or was cancelled.

    ``job`` is the job as the server last answered it; ``kind`` its error kind (``retryable``,
    ``permanent``, ``throttled``, ``transient``, ``timeout``, ``lost``), or ``cancelled``.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        error: Dict[str, Any] = dict(job.get("error") or {})
        cancelled = job.get("state") == "cancelled"
        self.kind: str = "cancelled" if cancelled else str(error.get("kind") or "unknown")
        why = f": {error['message']}" if error.get("message") else ""
        what = "was cancelled" if cancelled else f"failed ({self.kind})"
        super().__init__(f"job {job.get('id')} ({job.get('queue')}) {what}{why}")


class WaitTimeout(DroveException):
    """The job had not finished when ``wait_ms`` ran out; ``job`` is its last known state."""

    def __init__(self, job: Job, waited_ms: int) -> None:
        self.job = job
        self.waited_ms = waited_ms
        super().__init__(f"job {job.get('id')} ({job.get('queue')}) is still {job.get('state')} after waiting {waited_ms} ms")


# ---- why a handler was asked to stop (ctx.cancel_reason)


class JobCancelled(DroveException):
    """Someone cancelled the job; a heartbeat said so."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


class JobTimedOut(DroveException):
    """The job ran longer than its ``timeout_ms``; the server fails it with kind ``timeout``."""

    def __init__(self, job_id: str, timeout_ms: int) -> None:
        self.job_id = job_id
        self.timeout_ms = timeout_ms
        super().__init__(f"job {job_id} ran longer than its timeout of {timeout_ms} ms")


class WorkerClosed(DroveException):
    """The worker closed and its grace ran out: the job is handed back to the queue."""

    def __init__(self, message: str = "the worker is closing: the job is handed back to the queue") -> None:
        super().__init__(message)
