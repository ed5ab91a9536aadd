"""What a handler raises (or returns) to steer its job.

- :class:`Throttled` — the downstream pushed back (HTTP 429, a quota): run again after
  ``retry_after_ms``, using no attempt; the queue's adaptive limit and rate hold hear of it.
- :class:`Permanent` — fail now, whatever attempts remain.
- :class:`Snooze` — not an error: run again after ``ms``, using no attempt.
- :class:`Transient` — a blip (a deadlock, a reset connection): retried soon with a short jitter,
  on a budget of its own that does not use ``max_attempts``.
- ``return partial(result)`` — a success that left some items undone.
- anything else — retryable: backoff, then retry while attempts remain.

:func:`default_classify` recognises common transient errors by itself (MySQL deadlock and lock
wait timeout, PostgreSQL serialization failure and deadlock, a reset connection, a timeout, an
HTTP 503); a worker's ``classify=`` callable can override it.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from typing import Any, Callable, Generic, Optional, TypeVar, Union

__all__ = [
    "Throttled",
    "Permanent",
    "Snooze",
    "Transient",
    "Partial",
    "partial",
    "Outcome",
    "Classifier",
    "default_classify",
]

T = TypeVar("T")


class Throttled(Exception):
    """The downstream pushed back: run again after ``retry_after_ms`` (server default 1 s)."""

    def __init__(self, retry_after_ms: Optional[float] = None, message: str = "throttled") -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        self.message = message

    @classmethod
    def from_response(cls, response: Any, message: Optional[str] = None) -> "Throttled":
        """A Throttled from an HTTP answer (httpx, requests, aiohttp...) reading its
        ``Retry-After`` header: seconds, or an HTTP date. No usable header: the server's default.
        """
        headers = getattr(response, "headers", None) or {}
        raw = headers.get("retry-after") if hasattr(headers, "get") else None
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        text = message or (f"the downstream answered {status}" if status else "throttled")
        return cls(_retry_after_ms(raw), text)


def _retry_after_ms(raw: Optional[str]) -> Optional[float]:
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        seconds = float(raw)
        return max(0.0, seconds * 1000.0) if seconds == seconds else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, (when.timestamp() - time.time()) * 1000.0)


class Permanent(Exception):
    """Fail now, whatever attempts remain: retrying cannot help."""


class Snooze(Exception):
    """Not an error: run this job again after ``ms``, using no attempt."""

    def __init__(self, ms: float, message: str = "snoozed") -> None:
        super().__init__(message)
        self.ms = ms
        self.message = message


class Transient(Exception):
    """A short-lived failure (a deadlock, a lock wait timeout, a reset connection): the server
    retries soon with a short jitter, on a budget of its own that does not use
    ``max_attempts``. Against a server without that support it counts as retryable."""


class Partial(Generic[T]):
    """A handler's result that records a partial success (``partial: true`` on the job)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Partial({self.value!r})"


def partial(value: T) -> Partial[T]:
    """``return partial(result)`` from a handler: a success that left some items undone."""
    return Partial(value)


#: What a classifier answers: an outcome kind (``"transient"``, ``"retryable"``,
#: ``"permanent"``, ``"throttled"``), an outcome exception to use instead (``Throttled(5000)``,
#: ``Snooze(60_000)``, ``Permanent("bad input")``), or ``None`` for "no opinion".
Outcome = Union[str, BaseException, None]
Classifier = Callable[[BaseException], Outcome]

# MySQL: 1213 ER_LOCK_DEADLOCK, 1205 ER_LOCK_WAIT_TIMEOUT.
_MYSQL_CODES = (1213, 1205)
_MYSQL_MODULES = ("pymysql", "MySQLdb", "mysql", "aiomysql", "asyncmy", "mariadb")
# PostgreSQL: 40001 serialization_failure, 40P01 deadlock_detected.
_PG_STATES = ("40001", "40P01")


def default_classify(exc: BaseException) -> Outcome:
    """``"transient"`` for the common transient errors, else ``None`` (retryable).

    Looks at the error itself, at what SQLAlchemy wraps (``.orig``) and at its cause:
    MySQL 1213/1205 (pymysql, mysqlclient, mysql-connector, aiomysql: ``args[0]`` or ``errno``),
    PostgreSQL SQLSTATE 40001/40P01 (psycopg ``sqlstate``, psycopg2 ``pgcode``, asyncpg
    ``sqlstate``), ``ConnectionResetError``, ``ConnectionAbortedError``, ``TimeoutError``
    (and asyncio's), httpx timeouts, and an ``httpx.HTTPStatusError`` of status 503.
    """
    seen = 0
    current: Optional[BaseException] = exc
    while current is not None and seen < 5:
        if _is_transient(current):
            return "transient"
        seen += 1
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, TimeoutError, asyncio.TimeoutError)):
        return True
    for attr in ("sqlstate", "pgcode"):
        state = getattr(exc, attr, None)
        if isinstance(state, str) and state in _PG_STATES:
            return True
    if not isinstance(exc, OSError):
        module = type(exc).__module__ or ""
        if module.split(".")[0] in _MYSQL_MODULES or type(exc).__name__ == "OperationalError":
            code = exc.args[0] if exc.args else None
            if code in _MYSQL_CODES or getattr(exc, "errno", None) in _MYSQL_CODES:
                return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        return False
    if isinstance(exc, httpx.TimeoutException):
        return True
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 503:
        return True
    return False
