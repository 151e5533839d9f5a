"""Fixtures for the storage tests: one store per backend on a real server, and a reference file route.

The servers themselves (SeaweedFS, moto, Azurite, fake-gcs-server) come from tests/emulators/ (one module per
server), once per session.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3.session
import pytest
from moto.server import ThreadedMotoServer

from storage import (
    FullStore,
    InvalidSignatureError,
    LinkSigner,
    LocalStore,
    ObjectNotFoundError,
    S3Store,
    StorageCredentials,
    open_store,
)
from storage.signing import FILES_PATH
from tests.emulators import AzureServer, GcsServer, S3Server

BUCKET = "sdqueue-test"
REGION = "us-east-1"
SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on a free local port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws_session() -> boto3.session.Session:
    """A boto3 session with dummy credentials, so no test reads or needs the machine's AWS setup."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="moto-secret-key", region_name=REGION
    )


@pytest.fixture
def s3_bucket(moto_endpoint: str, aws_session: boto3.session.Session) -> str:
    """Name of a bucket that exists on the moto server: made again for each test, because moto keeps its state per
    process and the autoscaling tests reset it (under xdist, in the same process as storage tests)."""
    client = aws_session.client("s3", endpoint_url=moto_endpoint)
    try:
        with suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            client.create_bucket(Bucket=BUCKET)
    finally:
        client.close()
    return BUCKET


@pytest.fixture
def s3_store(moto_endpoint: str, aws_session: boto3.session.Session, s3_bucket: str) -> Iterator[S3Store]:
    """An S3 store under a fresh prefix, so tests never see each other's objects; closed afterwards (its pooled
    connections to the session's moto server would otherwise be collected, with a ResourceWarning, in a later test)."""
    with closing(
        S3Store(
            s3_bucket,
            f"tests/{uuid.uuid4().hex}",
            session=aws_session,
            endpoint_url=moto_endpoint,
            region=REGION,
            addressing_style="path",
        )
    ) as store:
        yield store


class _FileRoute(BaseHTTPRequestHandler):
    """What the API's file routes do: verify the link, then stream the file with its type (GET) or store it (PUT)."""

    server: _FileServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        key = unquote(url.path.removeprefix(FILES_PATH))
        try:
            self.server.signer.verify(key, query.get("expires", [""])[0], query.get("signature", [""])[0])
            path, info = self.server.store.open_for_read(key)
        except InvalidSignatureError as exc:
            self.send_error(403, str(exc))
            return
        except ObjectNotFoundError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", info.content_type or "application/octet-stream")
        self.send_header("Content-Length", str(info.size))
        if info.content_disposition:
            self.send_header("Content-Disposition", info.content_disposition)
        self.end_headers()
        self.wfile.write(path.read_bytes())

    def do_PUT(self) -> None:
        """What the API's `PUT /v1/files/{key:path}` does: verify the upload link, cap the body, store it."""
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        key = unquote(url.path.removeprefix(FILES_PATH))
        content_type = self.headers.get("Content-Type", "")
        try:
            limit = self.server.signer.verify_upload(
                key,
                query.get("expires", [""])[0],
                query.get("max_bytes", [""])[0],
                content_type,
                query.get("signature", [""])[0],
            )
        except InvalidSignatureError as exc:
            self.send_error(403, str(exc))
            return
        length = int(self.headers.get("Content-Length", "0"))
        if length > limit:
            self.send_error(413)
            return
        self.server.store.put(key, self.rfile.read(length), content_type=content_type)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _FileServer(ThreadingHTTPServer):
    signer: LinkSigner
    store: LocalStore


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalStore]:
    """A local store whose signed links are served by a reference file route on a free local port."""
    server = _FileServer(("127.0.0.1", 0), _FileRoute)
    server.signer = LinkSigner(SECRET, f"http://127.0.0.1:{server.server_address[1]}")
    server.store = LocalStore(tmp_path / "store", signer=server.signer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server.store
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def seaweedfs_store(seaweedfs_server: S3Server) -> Iterator[FullStore]:
    """An S3 store on SeaweedFS (which checks SigV4), opened by URL with its keys as explicit secrets."""
    seaweedfs_server.create_bucket(BUCKET)
    credentials = StorageCredentials(
        aws_access_key_id=seaweedfs_server.access_key_id, aws_secret_access_key=seaweedfs_server.secret_access_key
    )
    with closing(
        open_store(seaweedfs_server.url(BUCKET, f"tests/{uuid.uuid4().hex}"), credentials=credentials)
    ) as store:
        yield store


@pytest.fixture
def azurite_store(azurite_server: AzureServer) -> Iterator[FullStore]:
    """An Azure Blob store on Azurite, opened by URL with the account key as an explicit secret."""
    azurite_server.create_container(BUCKET)
    credentials = StorageCredentials(azure_account_key=azurite_server.account_key)
    with closing(open_store(azurite_server.url(BUCKET, f"tests/{uuid.uuid4().hex}"), credentials=credentials)) as store:
        yield store


@pytest.fixture
def fake_gcs_store(fake_gcs_server: GcsServer) -> Iterator[FullStore]:
    """A GCS store on fake-gcs-server: requests go unauthenticated (the emulator knows no OAuth), URLs are signed
    with a service-account key generated for the session."""
    fake_gcs_server.create_bucket(BUCKET)
    credentials = StorageCredentials(gcs_service_account_json=json.dumps(fake_gcs_server.service_account_info))
    url = fake_gcs_server.url(BUCKET, f"tests/{uuid.uuid4().hex}") + "&anonymous=true"
    with closing(open_store(url, credentials=credentials)) as store:
        yield store


#: Every backend, named by the server it runs against; each with its marker.
BACKENDS = [
    pytest.param("local", id="file"),
    pytest.param("s3", id="moto", marks=pytest.mark.s3),
    pytest.param("seaweedfs", id="seaweedfs", marks=pytest.mark.s3),
    pytest.param("azurite", id="azurite", marks=pytest.mark.azure),
    pytest.param("fake_gcs", id="fake-gcs", marks=pytest.mark.gcs),
]
#: The backends whose server checks presigned URLs itself (moto and fake-gcs-server accept any signature).
CHECKING_BACKENDS = [param for param in BACKENDS if param.id in ("file", "seaweedfs", "azurite")]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> FullStore:
    """Each backend in turn; the contract suite runs once per param."""
    store: FullStore = request.getfixturevalue(f"{request.param}_store")
    return store


@pytest.fixture(params=CHECKING_BACKENDS)
def checking_store(request: pytest.FixtureRequest) -> FullStore:
    """Each backend whose server verifies presigned URLs (signature and expiry)."""
    store: FullStore = request.getfixturevalue(f"{request.param}_store")
    return store
