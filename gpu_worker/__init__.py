"""sdqueue's GPU side: the Dramatiq actor, model loading, inference, encoding and upload.

Importing the package is cheap; torch and diffusers load with the modules that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import WorkerSettings

__all__ = ["WorkerSettings"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one light module of the package (the device process's first import, see
    # parent_death.py) does not import the settings and, with them, producer and pydantic.
    if name == "WorkerSettings":
        from .settings import WorkerSettings

        return WorkerSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
