"""One HTTP round trip to the server (httpx, sync or async): JSON in, JSON out, the API's error
format turned into :class:`DroveError`. Nothing here retries; callers decide what is safe to
repeat. Also the request bodies both clients build (submit options, queue settings)."""

from __future__ import annotations

import datetime as _dt
import json
import random
from typing import Any, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import quote

import httpx

from .errors import DroveError, Unreachable, error_from

#: The server holds one long poll for at most this long (docs/API.md: ``?wait=`` is at most 60 s).
LONG_POLL_MS = 60_000
#: What submit_and_wait, once and get(wait_ms=) wait by default.
DEFAULT_WAIT_MS = 60_000
#: The batch endpoints take 1 to 1,000 entries.
MAX_BATCH = 1_000
#: Extra read time a long poll gets beyond what it asked the server to hold it.
LONG_POLL_SLACK_S = 15.0

TERMINAL = frozenset(("succeeded", "failed", "cancelled"))

# A missing value ("leave this setting alone"), distinct from None ("clear it").
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET", "__bool__": lambda self: False})()


def is_terminal(job: Mapping[str, Any]) -> bool:
    """True for a succeeded, failed or cancelled job."""
    return job.get("state") in TERMINAL


class RawJSON:
    """A request body that is already JSON text (bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def dumps(value: Any) -> bytes:
    """Strict JSON (no NaN or Infinity, which the server would refuse), UTF-8."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def job_path(job_id: str, action: str = "") -> str:
    path = "/v1/jobs/" + quote(str(job_id), safe="")
    return f"{path}/{action}" if action else path


def name_path(kind: str, name: str, action: str = "") -> str:
    path = f"/v1/{kind}/" + quote(str(name), safe="")
    return f"{path}/{action}" if action else path


def base_url(url: str) -> str:
    if not isinstance(url, str) or not url:
        raise TypeError("Drove(url) needs the server URL, e.g. http://127.0.0.1:7070")
    return url.rstrip("/")


def auth_headers(token: Optional[str], headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    out = {"accept": "application/json", "user-agent": "drove-client-python"}
    if headers:
        out.update(headers)
    if token:
        out["authorization"] = f"Bearer {token}"
    return out


def _encode(body: Any) -> Tuple[Optional[bytes], Dict[str, str]]:
    if body is None:
        return None, {}
    data = body.data if isinstance(body, RawJSON) else dumps(body)
    return data, {"content-type": "application/json"}


def _decode(response: httpx.Response, method: str, path: str, job_id: Optional[str]) -> Tuple[int, Any]:
    status = response.status_code
    text = response.content
    parsed: Any = None
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            if 200 <= status < 300:
                raise DroveError(status, "bad_answer", f"{method} {path}: the answer is not JSON") from None
    if not 200 <= status < 300:
        raise error_from(status, parsed, f"{method} {path}", job_id)
    return status, parsed


def _unreachable(method: str, path: str, base: str, err: Exception) -> Unreachable:
    why = str(err) or type(err).__name__
    return Unreachable(f"{method} {path}: no answer from {base} ({type(err).__name__}: {why})")


Timeout = Union[float, httpx.Timeout, None]


def timeout_for(default: float, read_s: Optional[float]) -> httpx.Timeout:
    """The default timeout, with a longer read for a long poll."""
    if read_s is None:
        return httpx.Timeout(default)
    return httpx.Timeout(default, read=read_s + LONG_POLL_SLACK_S)


class SyncHTTP:
    def __init__(self, url: str, token: Optional[str], headers: Optional[Mapping[str, str]], timeout: float, client: Optional[httpx.Client]) -> None:
        self.base = base_url(url)
        self.headers = auth_headers(token, headers)
        self.timeout = timeout
        self.owned = client is None
        self.client = client if client is not None else httpx.Client()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        long_poll_s: Optional[float] = None,
        job_id: Optional[str] = None,
    ) -> Tuple[int, Any]:
        content, extra = _encode(body)
        headers = {**self.headers, **extra} if extra else self.headers
        try:
            response = self.client.request(
                method,
                self.base + path,
                content=content,
                headers=headers,
                timeout=timeout_for(self.timeout, long_poll_s),
            )
        except httpx.RequestError as err:
            raise _unreachable(method, path, self.base, err) from err
        return _decode(response, method, path, job_id)

    def close(self) -> None:
        if self.owned:
            self.client.close()


class AsyncHTTP:
    def __init__(self, url: str, token: Optional[str], headers: Optional[Mapping[str, str]], timeout: float, client: Optional[httpx.AsyncClient]) -> None:
        self.base = base_url(url)
        self.headers = auth_headers(token, headers)
        self.timeout = timeout
        self.owned = client is None
        self.client = client if client is not None else httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        long_poll_s: Optional[float] = None,
        job_id: Optional[str] = None,
        timeout_s: Optional[float] = None,
    ) -> Tuple[int, Any]:
        content, extra = _encode(body)
        headers = {**self.headers, **extra} if extra else self.headers
        timeout = httpx.Timeout(timeout_s) if timeout_s is not None else timeout_for(self.timeout, long_poll_s)
        try:
            response = await self.client.request(method, self.base + path, content=content, headers=headers, timeout=timeout)
        except httpx.RequestError as err:
            raise _unreachable(method, path, self.base, err) from err
        return _decode(response, method, path, job_id)

    async def aclose(self) -> None:
        if self.owned:
            await self.client.aclose()


# ---- request bodies


def rfc3339(value: Any) -> str:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError("run_at needs a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
        return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def parse_time(value: Any) -> Optional[float]:
    """An RFC 3339 time as seconds since the epoch (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python before 3.11 reads only 3 or 6 fractional digits.
    if "." in text:
        head, _, rest = text.partition(".")
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        text = f"{head}.{(rest[:n] + '000000')[:6]}{rest[n:]}"
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


SUBMIT_OPTIONS = (
    "kind",
    "key",
    "group",
    "priority",
    "delay_ms",
    "run_at",
    "max_attempts",
    "timeout_ms",
    "reuse_for_ms",
    "on_conflict",
    "traceparent",
    "tracestate",
)


def active_trace() -> Dict[str, str]:
    """The active OpenTelemetry span's W3C context (``traceparent``, ``tracestate``), when the
    ``opentelemetry-api`` package is installed and a span is active; else nothing."""
    try:
        from opentelemetry import propagate  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    carrier: Dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


def submit_body(queue: str, payload: Any, options: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(queue, str) or not queue:
        raise TypeError("submit needs a queue name")
    body: Dict[str, Any] = {"queue": queue, "payload": payload}
    for name, value in options.items():
        if value is UNSET or value is None:
            continue
        if name not in SUBMIT_OPTIONS:
            raise TypeError(f"unknown submit option {name!r} (one of {', '.join(SUBMIT_OPTIONS)})")
        body[name] = rfc3339(value) if name == "run_at" else value
    # The caller's trace: given, else the active span's (with OpenTelemetry installed).
    if "traceparent" not in body:
        trace = active_trace()
        if "traceparent" in trace:
            body.update(trace)
    return body


def spec_body(spec: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(spec, Mapping) or "queue" not in spec:
        raise TypeError("each job of submit_many needs at least a 'queue'")
    options = {k: v for k, v in spec.items() if k not in ("queue", "payload")}
    return submit_body(spec["queue"], spec.get("payload"), options)


def settings_body(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Queue or pool settings: UNSET leaves a setting alone, None clears it."""
    return {k: v for k, v in settings.items() if v is not UNSET}


def wait_param(ms: float) -> str:
    return f"{max(0, int(ms + 0.999))}ms"


class Backoff:
    """Capped exponential backoff with jitter (each pause a random 50-100% of the step)."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base = base_s
        self.cap = cap_s
        self.step = base_s

    def reset(self) -> None:
        self.step = self.base

    def next(self) -> float:
        pause = self.step * (0.5 + random.random() / 2)
        self.step = min(self.cap, self.step * 2)
        return pause
