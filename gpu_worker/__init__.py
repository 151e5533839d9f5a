"""sdqueue's GPU side: the Dramatiq actor, model loading, inference, encoding and upload.

Importing the package is cheap; torch and diffusers load with the modules that need them.
"""

from .settings import WorkerSettings

__all__ = ["WorkerSettings"]
