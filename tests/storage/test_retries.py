"""Transient errors: each backend retries a 503 with backoff and succeeds; an outage that lasts is a StorageError.

The servers are the real emulators; a small proxy in front of each fails the first requests (tests/storage/
flaky_proxy.py), since none of the emulators can be told to fail on demand.
"""

from __future__ import annotations

import gc
import json
import uuid
import warnings
from collections.abc import Callable

import pytest

from storage import (
    AzureBlobStore,
    FullStore,
    GcsStore,
    ObjectNotFoundError,
    S3Store,
    StorageError,
)
from tests.emulators import AzureServer, GcsServer, S3Server
from tests.storage.flaky_proxy import flaky_proxy, proxy_url

BUCKET = "sdqueue-test"
StoreAt = Callable[[str, int], FullStore]


def _s3(server: S3Server) -> tuple[str, StoreAt]:
    server.create_bucket(BUCKET)

    def make(endpoint: str, attempts: int) -> FullStore:
        return S3Store(
            BUCKET,
            uuid.uuid4().hex,
            endpoint_url=endpoint,
            region=server.region,
            addressing_style="path",
            access_key_id=server.access_key_id,
            secret_access_key=server.secret_access_key,
            max_attempts=attempts,
        )

    return server.endpoint_url, make


def _azure(server: AzureServer) -> tuple[str, StoreAt]:
    server.create_container(BUCKET)

    def make(endpoint: str, attempts: int) -> FullStore:
        return AzureBlobStore(
            server.account,
            BUCKET,
            uuid.uuid4().hex,
            endpoint_url=endpoint,
            account_key=server.account_key,
            max_attempts=attempts,
        )

    return server.blob_endpoint, make


def _gcs(server: GcsServer) -> tuple[str, StoreAt]:
    server.create_bucket(BUCKET)

    def make(endpoint: str, attempts: int) -> FullStore:
        # google-api-core bounds retries by time, not count: a few seconds allow two retries after backoff.
        return GcsStore(
            BUCKET,
            uuid.uuid4().hex,
            endpoint_url=endpoint,
            anonymous=True,
            service_account_info=json.loads(json.dumps(server.service_account_info)),
            max_attempts_s=8.0 if attempts > 2 else 2.5,
        )

    return server.endpoint_url, make


@pytest.fixture(
    params=[
        pytest.param("seaweedfs", marks=pytest.mark.s3),
        pytest.param("azurite", marks=pytest.mark.azure),
        pytest.param("fake_gcs", marks=pytest.mark.gcs),
    ]
)
def backend(request: pytest.FixtureRequest) -> tuple[str, StoreAt]:
    server = request.getfixturevalue(f"{request.param}_server")
    return {"seaweedfs": _s3, "azurite": _azure, "fake_gcs": _gcs}[request.param](server)


def test_transient_503s_are_retried_until_the_request_succeeds(backend: tuple[str, StoreAt]) -> None:
    upstream, make = backend
    with flaky_proxy(upstream, failures=2) as proxy:
        store = make(proxy_url(proxy, upstream), 5)
        try:
            store.put("a.txt", b"survived", content_type="text/plain")
            assert store.get("a.txt") == b"survived"
        finally:
            store.close()
    assert proxy.failed == 2 and proxy.forwarded >= 2


def test_an_outage_that_lasts_is_a_storage_error_not_a_missing_object(backend: tuple[str, StoreAt]) -> None:
    upstream, make = backend
    with flaky_proxy(upstream, failures=-1) as proxy:
        store = make(proxy_url(proxy, upstream), 2)
        try:
            with pytest.raises(StorageError) as raised:
                store.get("a.txt")
        finally:
            store.close()
    assert not isinstance(raised.value, ObjectNotFoundError)
    assert proxy.failed >= 2 and proxy.forwarded == 0  # it did try again
    # google-cloud-storage leaves the socket of a failed streamed download open until garbage collection (its
    # bug, not ours): collect it here, where that is expected, rather than in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_a_body_corrupted_in_transit_is_refused_not_stored(backend: tuple[str, StoreAt]) -> None:
    upstream, make = backend
    payload = b"IMAGE-BYTES-" + bytes(range(256)) * 8
    with flaky_proxy(upstream, failures=0, corrupt=b"IMAGE-BYTES-") as proxy:
        store = make(proxy_url(proxy, upstream), 1)
        try:
            with pytest.raises(StorageError):
                store.put("c.png", payload, content_type="image/png")
            if not isinstance(store, GcsStore):  # fake-gcs-server stores it (Cloud Storage would refuse it)
                with pytest.raises(ObjectNotFoundError):
                    store.head("c.png")
        finally:
            store.close()
