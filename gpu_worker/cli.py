"""The `sdq worker` command, registered with the CLI through the `sdqueue.commands` entry point."""

from __future__ import annotations

import os

import typer

from producer.cli import configure_logging


def worker(log_level: str = "info") -> None:
    """Run a GPU worker: pull jobs from Redis and run them on this machine's GPU (or CPU)."""
    from producer.catalog import load_catalog

    from .settings import WorkerSettings

    configure_logging(log_level)
    settings = WorkerSettings()
    load_catalog(settings.model_catalog)  # a bad SDQ_MODEL_CATALOG is one line naming the file, before anything starts
    if settings.compile:
        from .compile import compiler_cache_env

        # Before the device process is spawned (it inherits them) and before torch reads them: the compiler's
        # caches live in the model cache, which outlives the process (and /tmp).
        for name, value in compiler_cache_env(settings.resolved_model_cache_dir).items():
            os.environ.setdefault(name, value)
    device = None
    if settings.device_process:
        from .device.process import DeviceProcess

        # Started before this process imports torch and the worker: the child's imports (torch, diffusers: the
        # bulk of a cold start) overlap this process's own and its connecting to Redis.
        device = DeviceProcess(settings)
    try:
        from .worker import run_worker
    except ImportError as exc:  # torch/diffusers are the `worker` extra
        if device is not None:
            device.close()
        raise typer.BadParameter(f"{exc}; install the worker: pip install 'sdqueue[worker]'") from exc
    raise typer.Exit(run_worker(settings, device=device))
