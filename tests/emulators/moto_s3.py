"""moto's S3 server, in this process (it does not check signatures)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.emulators.s3 import S3Server


@contextmanager
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 server in this process on a free loopback port (it does not check signatures)."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        yield S3Server(f"http://{host}:{port}", "testing", "testing")
    finally:
        moto.stop()


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the whole session."""
    with moto_s3() as server:
        yield server
