"""The worker's Dramatiq middleware for scale to zero (idle shutdown), spot interruptions and status reports."""

from .idle import IdleShutdown
from .spot import SpotWatcher
from .status import StatusReporter

__all__ = ["IdleShutdown", "SpotWatcher", "StatusReporter"]
