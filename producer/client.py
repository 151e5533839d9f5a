"""The Python SDK: `Client` and its async twin `AsyncClient`, over the HTTP API."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from .errors import BatchNotFoundError, JobNotFoundError, ProducerError
from .jobs import BatchCreated, BatchJobPage, BatchRecord, JobPage, JobRecord, JobRequest, JobStatus, Progress

DEFAULT_API_URL = "http://127.0.0.1:8000"
OnUpdate = Callable[[JobRecord], None]


class ApiError(ProducerError):
    """The API refused a request; `fields` lists per-field problems for validation errors."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        error = response.json()["error"]
        code, message, fields = error["code"], error["message"], error.get("fields")
    except (ValueError, KeyError, TypeError):
        code, message, fields = "http_error", response.text[:500], None
    path = response.request.url.path
    if response.status_code == 404 and code == "not_found" and path.startswith("/v1/jobs/"):
        raise JobNotFoundError(path.split("/")[3])
    if response.status_code == 404 and code == "not_found" and path.startswith("/v1/batches/"):
        raise BatchNotFoundError(path.split("/")[3])
    raise ApiError(response.status_code, code, message, fields)


def _body(request: JobRequest | str, fields: dict[str, Any]) -> dict[str, Any]:
    job = request if isinstance(request, JobRequest) else JobRequest(prompt=request, **fields)
    return job.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _batch_body(
    items: Iterable[JobRequest | Mapping[str, Any]],
    defaults: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    rows = [
        item.model_dump(mode="json", exclude_none=True) if isinstance(item, JobRequest) else dict(item)
        for item in items
    ]
    return {"items": rows, "defaults": dict(defaults or {}), "metadata": dict(metadata or {})}


#: Read timeout of an event stream: the server sends a keep-alive comment every 15 s.
_STREAM_READ_TIMEOUT_S = 60.0


class _EventParser:
    """Server-Sent Events, line by line: `feed` returns a job record on each `status` or `progress` event."""

    def __init__(self) -> None:
        self.event, self.data = "message", ""
        self.record: JobRecord | None = None

    def feed(self, line: str) -> JobRecord | None:
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self.event = value
            elif name == "data":
                self.data += value
            return None
        event, data = self.event, self.data
        self.event, self.data = "message", ""
        if not data:  # the end of a keep-alive comment, or an event without data: nothing to dispatch
            return None
        if event == "status":
            self.record = JobRecord.model_validate_json(data)
            return self.record
        if event == "progress" and self.record is not None:
            self.record = self.record.model_copy(update={"progress": Progress.model_validate_json(data)})
            return self.record
        return None


def _output_path(dest: Path, record: JobRecord, index: int) -> Path:
    return dest / f"{record.id}-{index}.{record.outputs[index].key.rsplit('.', 1)[-1]}"


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


class Client:
    """A synchronous client. Use as a context manager, or call `close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport)

    def submit(self, request: JobRequest | str, *, idempotency_key: str | None = None, **fields: Any) -> JobRecord:
        """Submit a job: a `JobRequest`, or a prompt plus `JobRequest` fields. Validated here before sending.

        With `idempotency_key`, retrying the call (say after a timeout) returns the same job, never a second one."""
        response = _check(
            self._http.post("/v1/jobs", json=_body(request, fields), headers=_idempotency(idempotency_key))
        )
        return JobRecord.model_validate_json(response.content)

    def submit_batch(
        self,
        items: Iterable[JobRequest | Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchCreated:
        """Submit up to 10 000 jobs at once (each item may leave out what `defaults` gives); all or nothing."""
        body = _batch_body(items, defaults, metadata)
        response = _check(self._http.post("/v1/batches", json=body, headers=_idempotency(idempotency_key)))
        return BatchCreated.model_validate_json(response.content)

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch: counts by status, progress, cost so far; raises `BatchNotFoundError`."""
        return BatchRecord.model_validate_json(_check(self._http.get(f"/v1/batches/{batch_id}")).content)

    def batch_jobs(self, batch_id: str, *, offset: int = 0, limit: int = 100) -> BatchJobPage:
        """The batch's finished jobs, in the order they finished, from `offset` (follow `next_offset`)."""
        params = {"offset": offset, "limit": limit}
        return BatchJobPage.model_validate_json(
            _check(self._http.get(f"/v1/batches/{batch_id}/jobs", params=params)).content
        )

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Cancel every unfinished job of the batch."""
        return BatchRecord.model_validate_json(_check(self._http.post(f"/v1/batches/{batch_id}/cancel")).content)

    def get(self, job_id: str) -> JobRecord:
        """The job's record, with fresh output URLs; raises `JobNotFoundError`."""
        return JobRecord.model_validate_json(_check(self._http.get(f"/v1/jobs/{job_id}")).content)

    def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        """One page of jobs, newest first."""
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return JobPage.model_validate_json(_check(self._http.get("/v1/jobs", params=params)).content)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel the job (a running one stops at its next denoising step)."""
        return JobRecord.model_validate_json(_check(self._http.delete(f"/v1/jobs/{job_id}")).content)

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
            except (httpx.HTTPError, ProducerError, ValueError):
                done = None  # an older server, a proxy that buffers, a dropped connection: fall back to polling
            if done is not None:
                return done
        while True:
            record = self.get(job_id)
            if on_update:
                on_update(record)
            if record.status.is_terminal:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout_s:g} s")
            time.sleep(poll_interval_s)

    def _follow(self, job_id: str, deadline: float, on_update: OnUpdate | None) -> JobRecord | None:
        parser = _EventParser()
        timeout = httpx.Timeout(self._http.timeout.connect, read=_STREAM_READ_TIMEOUT_S)
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if not response.is_success:
                response.read()
                _check(response)
            for line in response.iter_lines():
                record = parser.feed(line)
                if record is not None:
                    if on_update:
                        on_update(record)
                    if record.status.is_terminal:
                        return record
                if time.monotonic() > deadline:
                    status = parser.record.status.value if parser.record else "unknown"
                    raise TimeoutError(f"job {job_id} still {status} after the deadline")
        return None

    def download(self, job: JobRecord | str, dest: Path) -> builtins.list[Path]:
        """Fetch every output of a succeeded job through its presigned URL into `dest`; returns the files."""
        record = self.get(job if isinstance(job, str) else job.id)
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, output in enumerate(record.outputs):
            if output.url is None:
                raise ProducerError(f"output {output.key} has no download URL")
            data = _check(self._http.get(output.url)).content
            paths.append(_write(_output_path(dest, record, index), data))
        return paths

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of `Client`, method for method."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    async def submit(
        self, request: JobRequest | str, *, idempotency_key: str | None = None, **fields: Any
    ) -> JobRecord:
        response = _check(
            await self._http.post("/v1/jobs", json=_body(request, fields), headers=_idempotency(idempotency_key))
        )
        return JobRecord.model_validate_json(response.content)

    async def submit_batch(
        self,
        items: Iterable[JobRequest | Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchCreated:
        body = _batch_body(items, defaults, metadata)
        response = _check(await self._http.post("/v1/batches", json=body, headers=_idempotency(idempotency_key)))
        return BatchCreated.model_validate_json(response.content)

    async def get_batch(self, batch_id: str) -> BatchRecord:
        return BatchRecord.model_validate_json(_check(await self._http.get(f"/v1/batches/{batch_id}")).content)

    async def batch_jobs(self, batch_id: str, *, offset: int = 0, limit: int = 100) -> BatchJobPage:
        params = {"offset": offset, "limit": limit}
        return BatchJobPage.model_validate_json(
            _check(await self._http.get(f"/v1/batches/{batch_id}/jobs", params=params)).content
        )

    async def cancel_batch(self, batch_id: str) -> BatchRecord:
        return BatchRecord.model_validate_json(_check(await self._http.post(f"/v1/batches/{batch_id}/cancel")).content)

    async def get(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(_check(await self._http.get(f"/v1/jobs/{job_id}")).content)

    async def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return JobPage.model_validate_json(_check(await self._http.get("/v1/jobs", params=params)).content)

    async def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(_check(await self._http.delete(f"/v1/jobs/{job_id}")).content)

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 600.0,
        poll_interval_s: float = 0.25,
        on_update: OnUpdate | None = None,
        stream: bool = True,
    ) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        if stream:
            try:
                done = await self._follow(job_id, deadline, on_update)
            except (httpx.HTTPError, ProducerError, ValueError):
                done = None
            if done is not None:
                return done
        while True:
            record = await self.get(job_id)
            if on_update:
                on_update(record)
            if record.status.is_terminal:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout_s:g} s")
            await asyncio.sleep(poll_interval_s)

    async def _follow(self, job_id: str, deadline: float, on_update: OnUpdate | None) -> JobRecord | None:
        parser = _EventParser()
        timeout = httpx.Timeout(self._http.timeout.connect, read=_STREAM_READ_TIMEOUT_S)
        async with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if not response.is_success:
                await response.aread()
                _check(response)
            async for line in response.aiter_lines():
                record = parser.feed(line)
                if record is not None:
                    if on_update:
                        on_update(record)
                    if record.status.is_terminal:
                        return record
                if time.monotonic() > deadline:
                    status = parser.record.status.value if parser.record else "unknown"
                    raise TimeoutError(f"job {job_id} still {status} after the deadline")
        return None

    async def download(self, job: JobRecord | str, dest: Path) -> builtins.list[Path]:
        record = await self.get(job if isinstance(job, str) else job.id)
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, output in enumerate(record.outputs):
            if output.url is None:
                raise ProducerError(f"output {output.key} has no download URL")
            data = _check(await self._http.get(output.url)).content
            paths.append(_write(_output_path(dest, record, index), data))
        return paths

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
