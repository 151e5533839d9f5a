"""sdqueue's light side: the wire contract, the HTTP API, the SDK and enqueueing. Never imports torch."""

from .client import ApiError, AsyncClient, Client
from .direct import connect, enqueue
from .errors import (
    JobConflictError,
    JobNotFoundError,
    ModelNotAllowedError,
    ProducerError,
    QueueUnavailableError,
)
from .jobs import (
    ErrorCode,
    JobError,
    JobPage,
    JobRecord,
    JobRequest,
    JobStatus,
    Output,
    OutputFormat,
    Progress,
    Scheduler,
    Timings,
)
from .service import JobService

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ErrorCode",
    "JobConflictError",
    "JobError",
    "JobNotFoundError",
    "JobPage",
    "JobRecord",
    "JobRequest",
    "JobService",
    "JobStatus",
    "ModelNotAllowedError",
    "Output",
    "OutputFormat",
    "ProducerError",
    "Progress",
    "QueueUnavailableError",
    "Scheduler",
    "Timings",
    "connect",
    "enqueue",
]
