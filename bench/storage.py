"""Upload throughput and presign cost of each storage backend, against the local servers the tests use.

`python -m bench.storage` starts SeaweedFS (S3), Azurite (Azure Blob) and fake-gcs-server (GCS) through
tests/emulators/, plus a local folder, and prints one JSON line per backend on stdout:

    {"backend": "s3", "server": "seaweedfs", "object_kb": 400, "uploads_per_s_c1": ..., "uploads_per_s_c16": ...,
     "mb_per_s_c16": ..., "speedup_c16": ..., "presign_us": ..., "presign_vs_file": ...}

`speedup_c16` is c16 ÷ c1 throughput of the same backend in the same run; `presign_vs_file` is its presign time
÷ the local backend's (HMAC links), measured in the same run. Logs go to stderr. Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from storage import FullStore, LinkSigner, StorageCredentials, open_store

log = logging.getLogger("bench.storage")

OBJECT_BYTES = 400 * 1024
BUCKET = "sdq-bench"


def _uploads_per_s(store: FullStore, payload: bytes, *, count: int, concurrency: int) -> float:
    run = uuid.uuid4().hex[:8]

    def upload(index: int) -> None:
        store.put(f"bench/{run}/{index}.png", payload, content_type="image/png", metadata={"n": str(index)})

    started = time.perf_counter()
    if concurrency == 1:
        for index in range(count):
            upload(index)
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(upload, range(count)))
    return count / (time.perf_counter() - started)


def _presign_us(store: FullStore, *, count: int) -> float:
    store.put("bench/presign.png", b"x", content_type="image/png")
    store.presign_get("bench/presign.png")  # warm: clients, signing keys
    started = time.perf_counter()
    for _ in range(count):
        store.presign_get("bench/presign.png")
    return (time.perf_counter() - started) / count * 1e6


def measure(store: FullStore, *, count_c1: int, count_c16: int) -> dict[str, float]:
    """The figures for one store: 400 KB uploads at concurrency 1 and 16, and presign time."""
    payload = os.urandom(OBJECT_BYTES)
    store.put("bench/warmup.png", payload, content_type="image/png")  # connections, buckets, volumes
    c1 = _uploads_per_s(store, payload, count=count_c1, concurrency=1)
    c16 = _uploads_per_s(store, payload, count=count_c16, concurrency=16)
    return {
        "uploads_per_s_c1": round(c1, 1),
        "uploads_per_s_c16": round(c16, 1),
        "mb_per_s_c16": round(c16 * OBJECT_BYTES / 1e6, 2),
        "speedup_c16": round(c16 / c1, 2),
        "presign_us": round(_presign_us(store, count=2000), 1),
    }


@contextmanager
def _backends(workdir: Path) -> Iterator[list[tuple[str, str, Callable[[], FullStore]]]]:
    """(backend, server, store factory) for each backend, with the servers running."""
    import json as json_module

    from tests.emulators import azurite, fake_gcs, seaweedfs

    with ExitStack() as stack:
        log.info("starting SeaweedFS, Azurite and fake-gcs-server")
        s3 = stack.enter_context(seaweedfs())
        s3.create_bucket(BUCKET)
        azure = stack.enter_context(azurite())
        azure.create_container(BUCKET)
        gcs = stack.enter_context(fake_gcs())
        gcs.create_bucket(BUCKET)
        signer = LinkSigner(os.urandom(32), "http://127.0.0.1:8000")
        aws = StorageCredentials(aws_access_key_id=s3.access_key_id, aws_secret_access_key=s3.secret_access_key)
        google = StorageCredentials(gcs_service_account_json=json_module.dumps(gcs.service_account_info))
        yield [
            ("file", "local", lambda: open_store((workdir / "objects").as_uri(), signer=signer)),
            ("s3", "seaweedfs", lambda: open_store(s3.url(BUCKET, "b"), credentials=aws)),
            (
                "azure",
                "azurite",
                lambda: open_store(
                    azure.url(BUCKET, "b"), credentials=StorageCredentials(azure_account_key=azure.account_key)
                ),
            ),
            (
                "gcs",
                "fake-gcs-server",
                lambda: open_store(gcs.url(BUCKET, "b") + "&anonymous=true", credentials=google),
            ),
        ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; one JSON line per backend on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-c1", type=int, default=24, help="uploads at concurrency 1, per backend")
    parser.add_argument("--count-c16", type=int, default=96, help="uploads at concurrency 16, per backend")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sdq-bench-") as tmp, _backends(Path(tmp)) as backends:
        file_presign_us: float | None = None
        for backend, server, make in backends:
            log.info("measuring %s on %s", backend, server)
            figures = measure(make(), count_c1=args.count_c1, count_c16=args.count_c16)
            if backend == "file":
                file_presign_us = figures["presign_us"]
            assert file_presign_us is not None  # the local baseline runs first
            line = {
                "backend": backend,
                "server": server,
                "object_kb": OBJECT_BYTES // 1024,
                **figures,
                "presign_vs_file": round(figures["presign_us"] / file_presign_us, 2),
            }
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    log.info("done in %.1f s (servers included)", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
