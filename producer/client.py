"""The Python SDK: `Client` and its async twin `AsyncClient`, over the HTTP API.

Both build their requests and read the answers through `BaseClient` (producer/client_base.py); what is left here
is sending, and the loops of `wait`, `_follow` and `download`, which block in one client and await in the other.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from .client_base import (
    API_LIMITS,
    DEFAULT_API_URL,
    STREAM_ERRORS,
    ApiError,
    BaseClient,
    Call,
    DownloadError,
    Follower,
    Model,
    OnUpdate,
    auth_headers,
    check,
    downloads,
    fetched,
    polled,
    storage_client_options,
    storage_errors,
)
from .client_inputs import (
    ImageSource,
    LocalImage,
    check_stored,
    find_local,
    local_image,
    pending,
    storage_request,
    upload_errors,
    uploaded_references,
    with_references,
)
from .holdings import ModelList
from .jobs import BatchCreated, BatchJobPage, BatchRecord, JobPage, JobRecord, JobRequest, JobStatus, UploadCreated
from .webhooks.log import Delivery, DeliveryList

__all__ = ["DEFAULT_API_URL", "ApiError", "AsyncClient", "BaseClient", "Client", "DownloadError", "OnUpdate"]


class Client(BaseClient):
    """A synchronous client. Use as a context manager, or call `close`."""

    _http: httpx.Client

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers=auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
            limits=API_LIMITS,
        )
        self._storage: httpx.Client | None = None  # for presigned URLs only; made on first use

    def _send(self, call: Call[Model]) -> Model:
        return call.parse(self._http.send(call.request))

    def submit(self, request: JobRequest | str, *, idempotency_key: str | None = None, **fields: Any) -> JobRecord:
        """Submit a job: a `JobRequest`, or a prompt plus `JobRequest` fields. Validated here before sending.

        Image fields (`image`, `mask_image`, each of `controlnets` and `ip_adapter`'s `image`) take a file path,
        bytes, an https or data URL, an upload id or what `upload` returned; files and bytes are uploaded first.
        With `idempotency_key`, retrying the call (say after a timeout) returns the same job, never a second one."""
        return self._send(self._submit(request, idempotency_key, self._uploaded(fields, {})))

    def upload(self, source: ImageSource, *, base: Path | None = None) -> UploadCreated:
        """Upload one image (a file path, relative to `base` if given, or bytes) straight to the server's storage;
        jobs then name it with `image=<the result>` (or its `id`) until `usable_until`."""
        local = local_image(source, field="upload", base=base)
        if local is None:
            raise ValueError("upload takes a file path or bytes (URLs and upload ids need no upload)")
        return self._upload(local)

    def _upload(self, local: LocalImage) -> UploadCreated:
        grant = self._send(self._create_upload(local.content_type))
        storage = self._storage_client()
        with upload_errors(local):
            check_stored(storage.send(storage_request(grant, local, storage.timeout)), local)
        return grant

    def _uploaded(self, fields: Mapping[str, Any], seen: dict[str, UploadCreated]) -> dict[str, Any]:
        found = find_local(fields)
        for key, local in pending(found, seen).items():
            seen[key] = self._upload(local)
        return with_references(fields, uploaded_references(found, seen))

    def _storage_client(self) -> httpx.Client:
        if self._storage is None:
            self._storage = httpx.Client(**storage_client_options(self._http.timeout))
        return self._storage

    def submit_batch(
        self,
        items: Iterable[JobRequest | Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchCreated:
        """Submit up to 10 000 jobs at once (each item may leave out what `defaults` gives); all or nothing. Local
        images in items are uploaded first, each distinct one once."""
        seen: dict[str, UploadCreated] = {}
        rows = [item if isinstance(item, JobRequest) else self._uploaded(item, seen) for item in items]
        return self._send(self._submit_batch(rows, defaults, metadata, idempotency_key))

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch: counts by status, progress, cost so far; raises `BatchNotFoundError`."""
        return self._send(self._get_batch(batch_id))

    def batch_jobs(self, batch_id: str, *, offset: int = 0, limit: int = 100) -> BatchJobPage:
        """The batch's finished jobs, in the order they finished, from `offset` (follow `next_offset`)."""
        return self._send(self._batch_jobs(batch_id, offset, limit))

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Cancel every unfinished job of the batch."""
        return self._send(self._cancel_batch(batch_id))

    def get(self, job_id: str) -> JobRecord:
        """The job's record, with fresh output URLs; raises `JobNotFoundError`."""
        return self._send(self._get(job_id))

    def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """One page of jobs, newest first."""
        return self._send(self._list(status, limit, cursor))

    def models(self) -> ModelList:
        """The server's model catalog, with whether a worker has each model loaded or cached."""
        return self._send(self._models())

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel the job (a running one stops at its next denoising step)."""
        return self._send(self._cancel(job_id))

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 600.0,
        poll_interval_s: float = 0.25,
        on_update: OnUpdate | None = None,
        stream: bool = True,
    ) -> JobRecord:
        """Wait until the job is terminal and return its record; raises `TimeoutError`.

        Follows the job's event stream (`GET /v1/jobs/{id}/events`: every status change and denoising step, no
        polling delay); if the stream is unavailable or drops, polls every `poll_interval_s` instead."""
        deadline = time.monotonic() + timeout_s
        if stream:
            try:
                done = self._follow(job_id, deadline, on_update)
            except STREAM_ERRORS:
                done = None
            if done is not None:
                return done
        while True:
            record = self.get(job_id)
            if polled(record, deadline=deadline, timeout_s=timeout_s, on_update=on_update):
                return record
            time.sleep(poll_interval_s)

    def _follow(self, job_id: str, deadline: float, on_update: OnUpdate | None) -> JobRecord | None:
        follower = Follower(job_id, deadline, on_update)
        while True:  # the server ends a stream after SDQ_MAX_STREAM_S: resume it where it left off
            response = self._http.send(self._events(job_id, follower.last_event_id), stream=True)
            try:
                if not response.is_success:
                    response.read()
                    check(response)
                for line in response.iter_lines():
                    if (record := follower.feed(line)) is not None:
                        return record
            finally:
                response.close()
            if not follower.resumes():
                return None

    def deliveries(self, job_id: str) -> DeliveryList:
        """The job's webhook messages, oldest first, each with its attempts; raises `JobNotFoundError`."""
        return self._send(self._deliveries(job_id))

    def redeliver(self, job_id: str, delivery_id: str) -> Delivery:
        """Send one webhook message of the job again now (same `webhook-id`, fresh signature)."""
        return self._send(self._redeliver(job_id, delivery_id))

    def download(self, job: JobRecord | str, dest: Path) -> builtins.list[Path]:
        """Fetch every output of a succeeded job through its presigned URL into `dest`; returns the files.

        The URLs are fetched with a separate plain client, never with the API's key; raises `DownloadError`."""
        record = self.get(job if isinstance(job, str) else job.id)
        storage = self._storage_client()
        paths = []
        for url, path in downloads(record, dest):
            with storage_errors(url):
                response = storage.send(self._file(url))
            paths.append(fetched(response, url, path))
        return paths

    def close(self) -> None:
        """Close the connections."""
        self._http.close()
        if self._storage is not None:
            self._storage.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(BaseClient):
    """The asyncio twin of `Client`, method for method."""

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
            limits=API_LIMITS,
        )
        self._storage: httpx.AsyncClient | None = None  # for presigned URLs only; made on first use

    async def _send(self, call: Call[Model]) -> Model:
        return call.parse(await self._http.send(call.request))

    async def submit(
        self, request: JobRequest | str, *, idempotency_key: str | None = None, **fields: Any
    ) -> JobRecord:
        """`Client.submit`, awaited."""
        return await self._send(self._submit(request, idempotency_key, await self._uploaded(fields, {})))

    async def upload(self, source: ImageSource, *, base: Path | None = None) -> UploadCreated:
        """`Client.upload`, awaited."""
        local = local_image(source, field="upload", base=base)
        if local is None:
            raise ValueError("upload takes a file path or bytes (URLs and upload ids need no upload)")
        return await self._upload(local)

    async def _upload(self, local: LocalImage) -> UploadCreated:
        grant = await self._send(self._create_upload(local.content_type))
        storage = self._storage_client()
        with upload_errors(local):
            check_stored(await storage.send(storage_request(grant, local, storage.timeout)), local)
        return grant

    async def _uploaded(self, fields: Mapping[str, Any], seen: dict[str, UploadCreated]) -> dict[str, Any]:
        found = find_local(fields)
        for key, local in pending(found, seen).items():
            seen[key] = await self._upload(local)
        return with_references(fields, uploaded_references(found, seen))

    def _storage_client(self) -> httpx.AsyncClient:
        if self._storage is None:
            self._storage = httpx.AsyncClient(**storage_client_options(self._http.timeout))
        return self._storage

    async def submit_batch(
        self,
        items: Iterable[JobRequest | Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchCreated:
        """`Client.submit_batch`, awaited."""
        seen: dict[str, UploadCreated] = {}
        rows = [item if isinstance(item, JobRequest) else await self._uploaded(item, seen) for item in items]
        return await self._send(self._submit_batch(rows, defaults, metadata, idempotency_key))

    async def get_batch(self, batch_id: str) -> BatchRecord:
        """`Client.get_batch`, awaited."""
        return await self._send(self._get_batch(batch_id))

    async def batch_jobs(self, batch_id: str, *, offset: int = 0, limit: int = 100) -> BatchJobPage:
        """`Client.batch_jobs`, awaited."""
        return await self._send(self._batch_jobs(batch_id, offset, limit))

    async def cancel_batch(self, batch_id: str) -> BatchRecord:
        """`Client.cancel_batch`, awaited."""
        return await self._send(self._cancel_batch(batch_id))

    async def get(self, job_id: str) -> JobRecord:
        """`Client.get`, awaited."""
        return await self._send(self._get(job_id))

    async def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """`Client.list`, awaited."""
        return await self._send(self._list(status, limit, cursor))

    async def models(self) -> ModelList:
        """The server's model catalog, with whether a worker has each model loaded or cached."""
        return await self._send(self._models())

    async def cancel(self, job_id: str) -> JobRecord:
        """`Client.cancel`, awaited."""
        return await self._send(self._cancel(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 600.0,
        poll_interval_s: float = 0.25,
        on_update: OnUpdate | None = None,
        stream: bool = True,
    ) -> JobRecord:
        """`Client.wait`, awaited."""
        deadline = time.monotonic() + timeout_s
        if stream:
            try:
                done = await self._follow(job_id, deadline, on_update)
            except STREAM_ERRORS:
                done = None
            if done is not None:
                return done
        while True:
            record = await self.get(job_id)
            if polled(record, deadline=deadline, timeout_s=timeout_s, on_update=on_update):
                return record
            await asyncio.sleep(poll_interval_s)

    async def _follow(self, job_id: str, deadline: float, on_update: OnUpdate | None) -> JobRecord | None:
        follower = Follower(job_id, deadline, on_update)
        while True:  # the server ends a stream after SDQ_MAX_STREAM_S: resume it where it left off
            response = await self._http.send(self._events(job_id, follower.last_event_id), stream=True)
            try:
                if not response.is_success:
                    await response.aread()
                    check(response)
                async for line in response.aiter_lines():
                    if (record := follower.feed(line)) is not None:
                        return record
            finally:
                await response.aclose()
            if not follower.resumes():
                return None

    async def deliveries(self, job_id: str) -> DeliveryList:
        """`Client.deliveries`, awaited."""
        return await self._send(self._deliveries(job_id))

    async def redeliver(self, job_id: str, delivery_id: str) -> Delivery:
        """`Client.redeliver`, awaited."""
        return await self._send(self._redeliver(job_id, delivery_id))

    async def download(self, job: JobRecord | str, dest: Path) -> builtins.list[Path]:
        """`Client.download`, awaited (a separate plain client, never the API's key)."""
        record = await self.get(job if isinstance(job, str) else job.id)
        storage = self._storage_client()
        paths = []
        for url, path in downloads(record, dest):
            with storage_errors(url):
                response = await storage.send(self._file(url))
            paths.append(fetched(response, url, path))
        return paths

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()
        if self._storage is not None:
            await self._storage.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
