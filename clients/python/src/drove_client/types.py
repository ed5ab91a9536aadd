"""The shapes of the v1 API (docs/API.md in the repository, and ``GET /v1/openapi.json``).

What the server answers is handed over exactly as it came: plain dicts with the API's
snake_case field names (``job["max_attempts"]``, ``job["error"]["kind"]``), as docs/API.md and
``curl`` show them. These TypedDicts describe them for type checkers; payloads and results are
any JSON and never touched.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

__all__ = [
    "JobState",
    "ErrorKind",
    "JobError",
    "Progress",
    "Job",
    "ClaimedJob",
    "QueueCounts",
    "QueueInfo",
    "PoolInfo",
    "JobPage",
    "JobSpec",
]

#: scheduled, queued, running, succeeded, failed, cancelled
JobState = str
#: retryable, permanent, throttled, transient, timeout, lost
ErrorKind = str


class JobError(TypedDict):
    kind: ErrorKind
    message: str
    at: str


class Progress(TypedDict):
    done: int
    total: Optional[int]
    message: Optional[str]


class _JobRequired(TypedDict):
    id: str
    queue: str
    payload: Any
    state: JobState
    attempt: int
    max_attempts: int
    run_at: str
    created_at: str


class Job(_JobRequired, total=False):
    """A job, as docs/API.md section 2 describes it. Times are RFC 3339 strings."""

    kind: Optional[str]
    key: Optional[str]
    group: Optional[str]
    priority: int
    started_at: Optional[str]
    finished_at: Optional[str]
    progress: Optional[Progress]
    checkpoint: Any
    result: Any
    error: Optional[JobError]
    #: Every run that ended in an error, oldest first (the newest 25 are kept).
    errors: List[Dict[str, Any]]
    cancel_requested: bool
    partial: bool
    timeout_ms: Optional[int]
    worker: Optional[str]
    lease_expires_at: Optional[str]
    #: Transient failures retried so far (servers with the ``transient`` kind).
    transient_retries: int
    #: Submit answers only: true when the submit joined (or reused) an existing job.
    deduplicated: bool
    #: Claim answers only: the run's fencing token.
    lease: str
    #: The W3C trace context the job's runs descend from (present when it has one).
    traceparent: str
    tracestate: str


class ClaimedJob(Job, total=False):
    """A job handed out by a claim: the job plus its run's ``lease`` and ``lease_expires_at``."""


class QueueCounts(TypedDict):
    scheduled: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class QueueInfo(TypedDict, total=False):
    name: str
    config: Dict[str, Any]
    counts: QueueCounts
    limit_now: Optional[float]
    held_until: Optional[str]


class PoolInfo(TypedDict, total=False):
    name: str
    config: Dict[str, Any]
    limit_now: Optional[float]
    offline_limit_now: Optional[float]
    queues: List[str]


class JobPage(TypedDict):
    jobs: List[Job]
    next_cursor: Optional[str]


class _JobSpecRequired(TypedDict):
    queue: str


class JobSpec(_JobSpecRequired, total=False):
    """One entry of ``submit_many``: the queue, the payload and any submit option."""

    payload: Any
    kind: str
    key: str
    group: str
    priority: int
    delay_ms: int
    run_at: Any  # datetime or RFC 3339 string
    max_attempts: int
    timeout_ms: int
    reuse_for_ms: int
    on_conflict: str
    traceparent: str
    tracestate: str
