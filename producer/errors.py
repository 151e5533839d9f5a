"""The producer's errors."""

from __future__ import annotations


class ProducerError(Exception):
    """Root of every error the producer package raises."""


class JobNotFoundError(ProducerError, LookupError):
    """No job with that id (or it belongs to someone else, or its record expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class QueueUnavailableError(ProducerError):
    """Redis (the queue or the job store) could not be reached; nothing was enqueued."""


class ModelNotAllowedError(ProducerError, ValueError):
    """The job asks for a model this deployment does not serve."""


class JobConflictError(ProducerError):
    """The job is in a state that does not allow the operation (e.g. cancelling a finished job)."""
