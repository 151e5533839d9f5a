"""The `sdq worker` command, registered with the CLI through the `sdqueue.commands` entry point."""

from __future__ import annotations

import typer

from producer.cli import configure_logging


def worker(log_level: str = "info") -> None:
    """Run a GPU worker: pull jobs from Redis and run them on this machine's GPU (or CPU)."""
    try:
        from .worker import run_worker
    except ImportError as exc:  # torch/diffusers are the `worker` extra
        raise typer.BadParameter(f"{exc}; install the worker: pip install 'sdqueue[worker]'") from exc
    from .settings import WorkerSettings

    configure_logging(log_level)
    raise typer.Exit(run_worker(WorkerSettings()))
