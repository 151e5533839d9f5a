"""SeaweedFS (`weed server -s3`): the S3 emulator that checks SigV4 signatures."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.process import find_binary, free_ports, run_process
from tests.emulators.s3 import S3Server


@contextmanager
def seaweedfs() -> Iterator[S3Server]:
    """`weed server -s3` on free loopback ports, with one SigV4 identity (random keys): it rejects bad signatures."""
    ports = free_ports(10)
    server = S3Server(f"http://127.0.0.1:{ports[6]}", "sdq" + secrets.token_hex(8), secrets.token_urlsafe(30))
    config_dir = Path(tempfile.mkdtemp(prefix="sdq-weed-config-"))
    identity = {
        "name": "sdqueue",
        "credentials": [{"accessKey": server.access_key_id, "secretKey": server.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (config_dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (config_dir / "data").mkdir()
    argv = [
        find_binary("weed"),
        "server",
        f"-dir={config_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports[0]}",
        f"-master.port.grpc={ports[1]}",
        f"-volume.port={ports[2]}",
        f"-volume.port.grpc={ports[3]}",
        f"-filer.port={ports[4]}",
        f"-filer.port.grpc={ports[5]}",
        "-s3",
        f"-s3.port={ports[6]}",
        f"-s3.port.grpc={ports[7]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-iam.port={ports[8]}",
        f"-s3.config={config_dir / 's3.json'}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=50",
    ]

    def ready() -> bool:
        # The S3 port opens before the filer can store anything: wait for a real write.
        server.create_bucket("sdq-probe")
        client: Any = server.client()
        try:
            client.put_object(Bucket="sdq-probe", Key="probe", Body=b"ok")
        finally:
            client.close()
        return True

    try:
        with run_process(argv, "seaweedfs", ready):
            yield server
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[S3Server]:
    """SeaweedFS's S3 gateway (checks SigV4) for the whole session."""
    with seaweedfs() as server:
        yield server


@pytest.fixture
def s3_store_url(seaweedfs_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh `s3://sdq-tests/<random prefix>?endpoint_url=...` on SeaweedFS.

    The credentials are set as the standard AWS variables for this test (monkeypatch undoes it), so `open_store`
    in this process and any subprocess started with `os.environ` find them through boto3's usual chain.
    """
    bucket = "sdq-tests"
    seaweedfs_server.create_bucket(bucket)
    for name, value in seaweedfs_server.env.items():
        monkeypatch.setenv(name, value)
    return seaweedfs_server.url(bucket, f"t/{uuid.uuid4().hex}")
