"""The worker's Dramatiq middleware for scale to zero (idle shutdown), spot interruptions and status reports."""

from .busy import BusyClock
from .idle import IdleShutdown
from .spot import SpotWatcher
from .status import StatusReporter

__all__ = ["BusyClock", "IdleShutdown", "SpotWatcher", "StatusReporter"]
