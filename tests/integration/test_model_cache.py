"""The model cache across real processes and a real S3 server (SeaweedFS, which checks SigV4 signatures).

Downloads are counted by a small HTTP proxy in front of the S3 server: every object GET a worker makes passes
through it, so "downloaded once" is measured on the wire, not reported by the code under test.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import redis

from gpu_worker.tiny import build_tiny_lora
from producer.jobs import JobStatus
from storage import open_store
from tests.support import start_stack, wait_for

pytestmark = [pytest.mark.s3, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class CountingProxy:
    """Forwards HTTP requests to `upstream` unchanged (Host header included, so SigV4 still verifies) and counts
    them by (method, path)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                path, _, query = self.path.partition("?")
                with proxy._lock:
                    proxy.requests[(self.command, path + ("?" if query else ""))] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def object_gets(self, prefix: str) -> dict[str, int]:
        """GETs of single objects (not listings) whose path starts with `prefix`."""
        with self._lock:
            return {
                path: count
                for (method, path), count in self.requests.items()
                if method == "GET" and path.startswith(prefix) and not path.endswith("?")
            }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(seaweedfs_server: object) -> Iterator[CountingProxy]:
    counting = CountingProxy(seaweedfs_server.endpoint_url)  # type: ignore[attr-defined]
    yield counting
    counting.close()


def _with_path(url: str, suffix: str, **query: str) -> str:
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query)) | query
    return urlunsplit(parts._replace(path=f"{parts.path}/{suffix}", query=urlencode(options)))


def _upload_tiny(store_url: str, tiny_dir: Path) -> list[str]:
    """Put the tiny model's files under `tiny/` in the store; returns their keys."""
    store = open_store(store_url)
    keys = []
    for file in sorted(p for p in tiny_dir.rglob("*") if p.is_file()):
        key = f"tiny/{file.relative_to(tiny_dir).as_posix()}"
        store.put(key, file.read_bytes(), content_type="application/octet-stream")
        keys.append(key)
    return keys


# A worker-like process: wait for the start signal, fetch the model through the cache, load it for real.
_WORKER = """
import json, pathlib, sys, time
from gpu_worker.cache import ModelCache
from gpu_worker.pipelines import load_from_directory
cache_dir, model, go = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
with ModelCache(cache_dir).acquire(model) as lease:
    pipe = load_from_directory(lease.path, name=model, device="cpu")
    print(json.dumps({"installed": lease.installed, "path": str(lease.path), "pipeline": type(pipe).__name__}))
"""


def test_two_workers_on_an_empty_cache_download_the_model_once(
    s3_store_url: str, model_cache: Path, proxy: CountingProxy, tmp_path: Path
) -> None:
    keys = _upload_tiny(s3_store_url, model_cache / "tiny")
    model = _with_path(s3_store_url, "tiny", endpoint_url=proxy.url)
    cache_dir, go = tmp_path / "cache", tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(cache_dir), model, str(go)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        for _ in range(2)
    ]
    go.touch()  # both start at once, on an empty cache
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=240)
        assert worker.returncode == 0
        results.append(json.loads(out.decode().strip().splitlines()[-1]))

    assert sorted(r["installed"] for r in results) == [False, True]  # one installed, the other waited for it
    assert results[0]["path"] == results[1]["path"]
    assert {r["pipeline"] for r in results} == {"StableDiffusionPipeline"}
    bucket_prefix = urlsplit(s3_store_url).netloc + urlsplit(s3_store_url).path
    gets = proxy.object_gets(f"/{bucket_prefix}/tiny/")
    assert len(gets) == len(keys) and set(gets.values()) == {1}  # every file fetched, each exactly once
    assert sorted(p.name for p in (cache_dir / "models").iterdir()) == [Path(results[0]["path"]).name]


@pytest.mark.redis
def test_a_worker_preloads_from_a_bucket_and_survives_a_model_that_fails_to_load(
    s3_store_url: str, model_cache: Path, redis_server: str, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    _upload_tiny(s3_store_url, model_cache / "tiny")
    parts = urlsplit(s3_store_url)
    endpoint = dict(parse_qsl(parts.query))["endpoint_url"]
    # A job's model names no endpoint (job requests carry no URL options): the worker's AWS settings supply it.
    model = f"s3://{parts.netloc}{parts.path}/tiny"
    build_tiny_lora(tmp_path / "cache" / "loras" / "warm", base=model_cache / "tiny")  # placed by an operator
    stack = start_stack(tmp_path, redis_server, tmp_path / "cache")
    try:
        stack.start_worker(SDQ_PRELOAD_MODELS=model, AWS_ENDPOINT_URL_S3=endpoint)
        with stack.client() as client:
            hot = client.wait(client.submit("a cat", model=model, width=64, height=64, steps=2, seed=1).id)
            assert hot.status is JobStatus.SUCCEEDED, hot.error
            assert hot.timings.load_s == 0.0  # loaded at boot, before the worker took jobs

            missing = client.wait(client.submit("a cat", model=f"{model}-absent", width=64, height=64, steps=2).id)
            assert missing.status is JobStatus.FAILED and missing.error is not None
            assert missing.error.code == "model_not_found" and "no objects under this storage prefix" in (
                missing.error.message
            )
            broken = client.wait(client.submit("a cat", model=str(tmp_path), width=64, height=64, steps=2).id)
            assert broken.status is JobStatus.FAILED and broken.error is not None
            assert broken.error.code == "model_not_found"

            again = client.wait(client.submit("a cat", model=model, width=64, height=64, steps=2, seed=1).id)
            assert again.status is JobStatus.SUCCEEDED, again.error

            images = {}
            for label, loras in [("none", []), ("warm", [{"name": "warm"}]), ("zero", [{"name": "warm", "scale": 0}])]:
                job = client.submit("a cat", model=model, width=64, height=64, steps=2, seed=1, loras=loras)
                done = client.wait(job.id)
                assert done.status is JobStatus.SUCCEEDED, done.error
                images[label] = httpx.get(done.outputs[0].url, timeout=30).content
            assert images["warm"] != images["none"] and images["zero"] == images["none"]
            absent = client.wait(client.submit("a cat", model=model, steps=2, loras=[{"name": "absent"}]).id)
            assert absent.error is not None and absent.error.code == "model_not_found"
            assert stack.workers[0].poll() is None  # the same worker process served them all
        wait_for(lambda: any((tmp_path / "cache" / "models").iterdir()), timeout_s=5)
    finally:
        stack.stop()
