"""drove_client: the Python client of Drove, the durable job system.

Submit jobs and await their results, run expensive work once per key across every instance of
a service (:meth:`Drove.once`), and run workers with leases, heartbeats, checkpoints, progress,
cancellation and classified retries. :class:`Drove` is for sync code, :class:`AsyncDrove` for
asyncio; both speak only Drove's public HTTP API (``GET /v1/openapi.json``).
"""

from ._engine import WorkerEvent
from ._http import is_terminal
from .aio import AsyncDrove
from .client import Drove
from .errors import (
    BadRequest,
    Conflict,
    DroveError,
    DroveException,
    Forbidden,
    Invalid,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    KeyConflict,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unreachable,
    WaitTimeout,
    WorkerClosed,
    WrongState,
)
from .outcomes import (
    Classifier,
    Outcome,
    Partial,
    Permanent,
    Snooze,
    Throttled,
    Transient,
    default_classify,
    partial,
)
from .types import ClaimedJob, Job, JobPage, JobSpec, PoolInfo, QueueInfo
from .worker import AsyncJobContext, AsyncWorker, Handler, JobContext, Worker

__version__ = "0.1.0"

__all__ = [
    "Drove",
    "AsyncDrove",
    "Worker",
    "AsyncWorker",
    "JobContext",
    "AsyncJobContext",
    "WorkerEvent",
    "Handler",
    "is_terminal",
    # outcomes
    "Throttled",
    "Permanent",
    "Snooze",
    "Transient",
    "Partial",
    "partial",
    "Outcome",
    "Classifier",
    "default_classify",
    # errors
    "DroveException",
    "DroveError",
    "Unreachable",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "KeyConflict",
    "WrongState",
    "LeaseLost",
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
    # types
    "Job",
    "ClaimedJob",
    "JobPage",
    "JobSpec",
    "QueueInfo",
    "PoolInfo",
]
