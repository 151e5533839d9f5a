"""What `Client` and `AsyncClient` share: everything of the SDK that is not I/O.

As in httpx (`BaseClient.build_request`), the base builds each request and parses each answer; the two clients
only send. `wait`, `_follow` and `download` keep their loops in each client (one blocks, one awaits), and every
decision inside those loops (what an event means, when to stop, where a file goes) is made here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from .errors import BatchNotFoundError, JobNotFoundError, ProducerError
from .holdings import ModelList
from .jobs import (
    BatchCreated,
    BatchJobPage,
    BatchRecord,
    JobPage,
    JobRecord,
    JobRequest,
    JobStatus,
    Progress,
    UploadCreated,
    UploadRequest,
)
from .webhooks.log import Delivery, DeliveryList

DEFAULT_API_URL = "http://127.0.0.1:8000"
OnUpdate = Callable[[JobRecord], None]
Model = TypeVar("Model", bound=BaseModel)

#: Read timeout of an event stream: the server sends a keep-alive comment every 15 s.
_STREAM_READ_TIMEOUT_S = 60.0
#: What makes `wait` give up on the event stream and poll instead: an older server, a proxy that buffers, a
#: dropped connection.
STREAM_ERRORS = (httpx.HTTPError, ProducerError, ValueError)


class ApiError(ProducerError):
    """The API refused a request; `fields` lists per-field problems for validation errors.

    `status` is the remote answer's; `status_code` stays 500: an API that meets this error while serving a request
    of its own has a bug, not a client at fault."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []


class DownloadError(ProducerError):
    """An output's presigned URL did not download. The message names the object (its URL without the query, so
    never the signature) and what storage answered."""


def check(response: httpx.Response) -> httpx.Response:
    """`response` if it succeeded; else the error the API named (`JobNotFoundError`, `BatchNotFoundError` or
    `ApiError`)."""
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


class Call(Generic[Model]):
    """A request built but not sent, and the model its answer parses into."""

    __slots__ = ("model", "request")

    def __init__(self, request: httpx.Request, model: type[Model]) -> None:
        self.request = request
        self.model = model

    def parse(self, response: httpx.Response) -> Model:
        """The answer as the model; raises what `check` raises."""
        return self.model.model_validate_json(check(response).content)


def _body(request: JobRequest | str, fields: dict[str, Any]) -> dict[str, Any]:
    job = request if isinstance(request, JobRequest) else JobRequest(prompt=request, **fields)
    # Only what the caller gave: the server fills the rest from the model's catalog defaults (SDXL's 1024², ...).
    return job.model_dump(mode="json", exclude_none=True, exclude_unset=True)


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


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers every request of a client with `api_key` carries."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class EventParser:
    """Server-Sent Events, line by line: `feed` returns a job record on each `status` or `progress` event."""

    def __init__(self) -> None:
        self.event, self.data = "message", ""
        self.record: JobRecord | None = None
        #: The `id` of the last event (what a reconnect sends as `Last-Event-ID`).
        self.last_id: str | None = None

    def feed(self, line: str) -> JobRecord | None:
        """The job's record after `line`, if `line` completed a `status` or `progress` event; else None."""
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self.event = value
            elif name == "id":
                self.last_id = value
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


class Follower:
    """One job's event stream as `wait` follows it: `feed` each line; it returns the terminal record."""

    def __init__(self, job_id: str, deadline: float, on_update: OnUpdate | None) -> None:
        self.job_id, self.deadline, self.on_update = job_id, deadline, on_update
        self.parser = EventParser()
        self._resumed_at: str | None = None

    def resumes(self) -> bool:
        """After a stream ended before the terminal status: whether to reconnect (with `last_event_id`). The
        server ends streams after a while on purpose; a stream that brought nothing new is not worth another."""
        if self.parser.last_id is None or self.parser.last_id == self._resumed_at:
            return False
        self._resumed_at = self.parser.last_id
        return time.monotonic() < self.deadline

    @property
    def last_event_id(self) -> str | None:
        """The `Last-Event-ID` a reconnect sends."""
        return self.parser.last_id

    def feed(self, line: str) -> JobRecord | None:
        """The terminal record once `line` brings it, else None; raises `TimeoutError` past the deadline."""
        record = self.parser.feed(line)
        if record is not None:
            if self.on_update:
                self.on_update(record)
            if record.status.is_terminal:
                return record
        if time.monotonic() > self.deadline:
            status = self.parser.record.status.value if self.parser.record else "unknown"
            raise TimeoutError(f"job {self.job_id} still {status} after the deadline")
        return None


def polled(record: JobRecord, *, deadline: float, timeout_s: float, on_update: OnUpdate | None) -> bool:
    """Whether polling is over with `record` (it is terminal); raises `TimeoutError` past the deadline."""
    if on_update:
        on_update(record)
    if record.status.is_terminal:
        return True
    if time.monotonic() > deadline:
        raise TimeoutError(f"job {record.id} still {record.status.value} after {timeout_s:g} s")
    return False


def downloads(record: JobRecord, dest: Path) -> Iterator[tuple[str, Path]]:
    """(presigned URL, file to write) for each output of `record`, in order; raises `ProducerError` at the first
    output without a URL (those before it are fetched by then)."""
    dest.mkdir(parents=True, exist_ok=True)
    for index, output in enumerate(record.outputs):
        if output.url is None:
            raise ProducerError(f"output {output.key} has no download URL")
        yield output.url, dest / f"{record.id}-{index}.{output.key.rsplit('.', 1)[-1]}"


#: Idle keep-alive connections are dropped after this long, under the servers' own idle timeouts (uvicorn's is
#: 5 s, as is httpx's default expiry): with both at 5 s, a request sent on a connection idle for about 5 s met the
#: server's close, "Server disconnected without sending a response" (seen in the suite after a 5 s worker stop).
API_LIMITS = httpx.Limits(keepalive_expiry=3.0)


def storage_client_options(timeout: httpx.Timeout) -> dict[str, Any]:
    """How the client for storage URLs is built: no base URL, no headers, no auth, never a redirect followed.

    A presigned URL carries its own authorization in its query. The API's key must never travel with it: storage
    and CDN access logs would hold it, and real S3 refuses a request with both a presigned query and an
    `Authorization` header ("only one auth mechanism allowed"). So the API's client is never used for these."""
    return {"timeout": timeout, "follow_redirects": False}


def file_request(url: str, timeout: httpx.Timeout) -> httpx.Request:
    """A bare GET of a presigned URL: built outside any client, so no client header or cookie is merged in."""
    return httpx.Request("GET", url, extensions={"timeout": timeout.as_dict()})


def where(url: str) -> str:
    """`url` without its query and fragment: what an error may name (the query holds the signature)."""
    return str(httpx.URL(url).copy_with(query=None, fragment=None))


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Raise a transport failure fetching `url` as a `DownloadError` naming the object."""
    try:
        yield
    except httpx.TransportError as exc:
        raise DownloadError(f"could not download {where(url)}: {exc or type(exc).__name__}") from exc


def fetched(response: httpx.Response, url: str, path: Path) -> Path:
    """Write a storage answer for `url` to `path`; raises `DownloadError` unless it succeeded."""
    if not response.is_success:
        raise DownloadError(f"download of {where(url)} failed: storage answered HTTP {response.status_code}")
    return write(path, response.content)


def write(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file, so that `path` never holds half a download."""
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


class BaseClient:
    """The requests of every API call and how their answers parse; `Client` and `AsyncClient` send them."""

    _http: httpx.Client | httpx.AsyncClient

    def _build(self, method: str, url: str, **options: Any) -> httpx.Request:
        return self._http.build_request(method, url, **options)

    def _submit(
        self, request: JobRequest | str, idempotency_key: str | None, fields: dict[str, Any]
    ) -> Call[JobRecord]:
        body = _body(request, fields)
        return Call(self._build("POST", "/v1/jobs", json=body, headers=_idempotency(idempotency_key)), JobRecord)

    def _submit_batch(
        self,
        items: Iterable[JobRequest | Mapping[str, Any]],
        defaults: Mapping[str, Any] | None,
        metadata: Mapping[str, str] | None,
        idempotency_key: str | None,
    ) -> Call[BatchCreated]:
        body = _batch_body(items, defaults, metadata)
        return Call(self._build("POST", "/v1/batches", json=body, headers=_idempotency(idempotency_key)), BatchCreated)

    def _create_upload(self, content_type: str) -> Call[UploadCreated]:
        body = UploadRequest.model_validate({"content_type": content_type}).model_dump(mode="json")
        return Call(self._build("POST", "/v1/uploads", json=body), UploadCreated)

    def _get_batch(self, batch_id: str) -> Call[BatchRecord]:
        return Call(self._build("GET", f"/v1/batches/{batch_id}"), BatchRecord)

    def _batch_jobs(self, batch_id: str, offset: int, limit: int) -> Call[BatchJobPage]:
        params = {"offset": offset, "limit": limit}
        return Call(self._build("GET", f"/v1/batches/{batch_id}/jobs", params=params), BatchJobPage)

    def _cancel_batch(self, batch_id: str) -> Call[BatchRecord]:
        return Call(self._build("POST", f"/v1/batches/{batch_id}/cancel"), BatchRecord)

    def _get(self, job_id: str) -> Call[JobRecord]:
        return Call(self._build("GET", f"/v1/jobs/{job_id}"), JobRecord)

    def _list(self, status: JobStatus | None, limit: int, cursor: str | None) -> Call[JobPage]:
        params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
        return Call(self._build("GET", "/v1/jobs", params=params), JobPage)

    def _models(self) -> Call[ModelList]:
        return Call(self._build("GET", "/v1/models"), ModelList)

    def _cancel(self, job_id: str) -> Call[JobRecord]:
        return Call(self._build("POST", f"/v1/jobs/{job_id}/cancel"), JobRecord)

    def _deliveries(self, job_id: str) -> Call[DeliveryList]:
        return Call(self._build("GET", f"/v1/jobs/{job_id}/deliveries"), DeliveryList)

    def _redeliver(self, job_id: str, delivery_id: str) -> Call[Delivery]:
        return Call(self._build("POST", f"/v1/jobs/{job_id}/deliveries/{delivery_id}/redeliver"), Delivery)

    def _events(self, job_id: str, last_event_id: str | None = None) -> httpx.Request:
        timeout = httpx.Timeout(self._http.timeout.connect, read=_STREAM_READ_TIMEOUT_S)
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return self._build("GET", f"/v1/jobs/{job_id}/events", timeout=timeout, headers=headers)

    def _file(self, url: str) -> httpx.Request:
        return file_request(url, self._http.timeout)
