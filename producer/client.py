"""The Python SDK: `Client` and its async twin `AsyncClient`, over the HTTP API."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .errors import JobNotFoundError, ProducerError
from .jobs import JobPage, JobRecord, JobRequest, JobStatus

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
    if response.status_code == 404 and code == "not_found" and "/v1/jobs/" in response.request.url.path:
        raise JobNotFoundError(response.request.url.path.rsplit("/", 1)[-1])
    raise ApiError(response.status_code, code, message, fields)


def _body(request: JobRequest | str, fields: dict[str, Any]) -> dict[str, Any]:
    job = request if isinstance(request, JobRequest) else JobRequest(prompt=request, **fields)
    return job.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


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

    def submit(self, request: JobRequest | str, **fields: Any) -> JobRecord:
        """Submit a job: a `JobRequest`, or a prompt plus `JobRequest` fields. Validated here before sending."""
        response = _check(self._http.post("/v1/jobs", json=_body(request, fields)))
        return JobRecord.model_validate_json(response.content)

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
        self, job_id: str, *, timeout_s: float = 600.0, poll_interval_s: float = 0.25, on_update: OnUpdate | None = None
    ) -> JobRecord:
        """Poll until the job is terminal and return its record; raises `TimeoutError`."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.get(job_id)
            if on_update:
                on_update(record)
            if record.status.is_terminal:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout_s:g} s")
            time.sleep(poll_interval_s)

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

    async def submit(self, request: JobRequest | str, **fields: Any) -> JobRecord:
        response = _check(await self._http.post("/v1/jobs", json=_body(request, fields)))
        return JobRecord.model_validate_json(response.content)

    async def get(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(_check(await self._http.get(f"/v1/jobs/{job_id}")).content)

    async def list(self, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return JobPage.model_validate_json(_check(await self._http.get("/v1/jobs", params=params)).content)

    async def cancel(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(_check(await self._http.delete(f"/v1/jobs/{job_id}")).content)

    async def wait(
        self, job_id: str, *, timeout_s: float = 600.0, poll_interval_s: float = 0.25, on_update: OnUpdate | None = None
    ) -> JobRecord:
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.get(job_id)
            if on_update:
                on_update(record)
            if record.status.is_terminal:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout_s:g} s")
            await asyncio.sleep(poll_interval_s)

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
