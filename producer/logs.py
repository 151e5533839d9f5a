"""The log format every `sdq` process uses (the CLI's commands, each API server process, the worker)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log to stderr at `level` in sdqueue's format."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO, and the worker polls cloud metadata every few seconds (spot notices).
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
