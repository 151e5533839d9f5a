"""The worker's Dramatiq middleware for scale to zero (idle shutdown) and spot interruptions."""

from .idle import IdleShutdown
from .spot import SpotWatcher

__all__ = ["IdleShutdown", "SpotWatcher"]
