"""HTTP conformance over real HTTP (`sdq api` as a process, keys required, a real Redis): a 405's `Allow` lists
every method of the path, a body that is not UTF-8 or nests too deeply is a documented 422 (never a 400 or a 500),
query parameters take only their documented form, and every status a route can answer is in the OpenAPI.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from producer.apikeys import ApiKey, KeyStore, Role
from producer.localstack import LocalStack
from producer.webhooks.signing import signed_headers

pytestmark = pytest.mark.redis

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
NOT_UTF8 = b'{"prompt": "\xff\xfe\xfa caf\xe9"}'
#: Past the JSON parser's recursion limit (about 1 000 levels), and a modest depth inside a known field.
TOO_DEEP = [b"[" * 100_000 + b"]" * 100_000, b'{"prompt": "x", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001]


@dataclass(frozen=True)
class Served:
    stack: LocalStack
    key: ApiKey
    token: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.stack.api_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


@pytest.fixture(scope="module")
def served(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    key, token = KeyStore(client).create("conformance", role=Role.ADMIN, max_queued_jobs=0)
    tmp = tmp_path_factory.mktemp("conformance")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SDQ_")},
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp / "data"),
        "SDQ_AUTH": "required",
        "SDQ_RATE_LIMIT_PER_S": "0",
    }
    stack = LocalStack(env, tmp / "logs").start(webhooks=False)
    try:
        yield Served(stack, key, token)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def document(served: Served) -> dict:
    return httpx.get(f"{served.stack.api_url}/openapi.json").json()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0" * 32, path)


def test_a_405_allows_every_documented_method_of_the_path(served: Served, document: dict) -> None:
    with served.http() as http:
        for path, item in document["paths"].items():
            documented = {method.upper() for method in item if method in METHODS}
            for unsupported in {"OPTIONS", "PATCH", "PUT", "DELETE"} - documented:
                response = http.request(unsupported, _concrete(path))
                assert response.status_code == 405, (unsupported, path, response.status_code)
                allowed = {m.strip() for m in response.headers["allow"].split(",")}
                assert allowed == documented, (unsupported, path, allowed)
                assert response.json()["error"]["code"] == "method_not_allowed"


def _json_bodies(document: dict) -> list[str]:
    return [
        path
        for path, item in document["paths"].items()
        if "application/json" in item.get("post", {}).get("requestBody", {}).get("content", {}) and "{" not in path
    ]


def test_a_body_that_is_not_utf8_is_a_documented_422(served: Served, document: dict) -> None:
    paths = _json_bodies(document)
    assert {"/v1/jobs", "/v1/batches", "/v1/uploads"} <= set(paths)
    with served.http() as http:
        for path in paths:
            if path == "/v1/hooks/jobs":
                continue  # needs a signature first: below
            response = http.post(path, content=NOT_UTF8, headers={"content-type": "application/json"})
            assert response.status_code == 422, (path, response.text)
            assert "422" in document["paths"][path]["post"]["responses"]
            assert response.json()["error"]["fields"][0]["field"] == "body"


def _signed_hook(served: Served, body: bytes) -> httpx.Response:
    headers = {**signed_headers([served.key.inbound_secret], f"msg_{time.time_ns()}", body)}
    with served.http() as http:
        return http.post(
            f"/v1/hooks/jobs?key_id={served.key.id}",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )


@pytest.mark.parametrize("body", TOO_DEEP, ids=["arrays", "in-metadata"])
def test_deeply_nested_json_is_a_422_on_every_json_route(served: Served, document: dict, body: bytes) -> None:
    with served.http() as http:
        for path in _json_bodies(document):
            if path == "/v1/hooks/jobs":
                response = _signed_hook(served, body)  # a signed message: it gets as far as parsing
            else:
                response = http.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, (path, response.status_code, response.text[:300])
            assert response.json()["error"]["code"] == "validation_error"


def test_a_signed_hook_that_is_not_utf8_is_a_422(served: Served) -> None:
    response = _signed_hook(served, NOT_UTF8)
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def _answer_to_headers_alone(served: Served, path: str, authorization: str | None) -> bytes:
    """The status line the API sends to a POST whose headers came but whose (chunked) body never does; b"" if it
    waits for the body instead."""
    url = httpx.URL(served.stack.api_url)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    with socket.create_connection((url.host, url.port or 80), timeout=5) as conn:
        conn.sendall(f"{head}\r\n".encode())
        try:
            return conn.recv(4096).split(b"\r\n", 1)[0]
        except TimeoutError:
            return b""


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-key", "Bearer sdq_0123456789abcdef_" + "x" * 43])
def test_a_request_without_a_valid_key_is_401_before_its_body_is_read(
    served: Served, authorization: str | None
) -> None:
    # FastAPI reads a route's body before its dependencies: the key check came after the body (a 422 for a
    # malformed one) on `POST /v1/jobs` (whatever the direct path declines) and `POST /v1/uploads`.
    for path in ["/v1/jobs", "/v1/uploads", "/v1/batches", f"/v1/jobs/{'0' * 32}/cancel"]:
        assert _answer_to_headers_alone(served, path, authorization) == b"HTTP/1.1 401 Unauthorized", path
    with served.http() as http:
        for path in ["/v1/jobs", "/v1/uploads"]:
            headers = {"content-type": "application/json", "authorization": authorization or ""}
            malformed = http.post(path, content=iter([b"{not json"]), headers=headers)
            assert malformed.status_code == 401, (path, malformed.text)


def test_an_inbound_hook_naming_no_live_key_is_401_before_its_body_is_read(served: Served) -> None:
    for query in ["", "?key_id=0123456789abcdef"]:
        assert _answer_to_headers_alone(served, f"/v1/hooks/jobs{query}", None) == b"HTTP/1.1 401 Unauthorized"


def test_a_client_that_leaves_mid_body_is_no_incident(served: Served) -> None:
    url = httpx.URL(served.stack.api_url)
    log = served.stack.logs / "api.log"
    logged = log.stat().st_size
    for path in ["/v1/batches", f"/v1/hooks/jobs?key_id={served.key.id}", "/v1/jobs", "/v1/uploads"]:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
        with socket.create_connection((url.host, url.port or 80), timeout=5) as conn:
            conn.sendall(f"{head}Authorization: Bearer {served.token}\r\n\r\n".encode() + b'{"items": [')
            conn.shutdown(socket.SHUT_WR)  # 11 of the 100 bytes promised, then gone
            conn.recv(4096)
    with served.http() as http:
        assert http.get("/healthz").status_code == 200
    with log.open("rb") as handle:
        handle.seek(logged)
        written = handle.read().decode(errors="replace")
    assert "Traceback" not in written and "incident" not in written, written[-2000:]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/costs", {"day": "0"}, "day"),
        ("/v1/costs", {"day": "1e9"}, "day"),
        ("/v1/costs/tenant", {"day": "2024-02-30"}, "day"),
        ("/v1/jobs", {"limit": "1.0"}, "limit"),
        ("/v1/jobs", {"limit": " 5"}, "limit"),
        ("/v1/jobs", {"limit": "+5"}, "limit"),
        ("/v1/jobs", {"limit": "1_0"}, "limit"),
        ("/v1/batches", {"limit": "2.5"}, "limit"),
        ("/v1/fleet/history", {"minutes": "1e1"}, "minutes"),
        ("/v1/events", {"recent": "yes"}, "recent"),
        ("/v1/events", {"recent": "1"}, "recent"),
        ("/v1/events", {"recent": "True"}, "recent"),
    ],
)
def test_query_parameters_take_only_their_documented_form(
    served: Served, path: str, params: dict[str, str], field: str
) -> None:
    with served.http() as http:
        response = http.get(path, params=params)
    assert response.status_code == 422, (path, params, response.text)
    assert response.json()["error"]["fields"][0]["field"] == field


def test_the_documented_forms_still_work(served: Served) -> None:
    with served.http() as http:
        assert http.get("/v1/jobs", params={"limit": "7"}).status_code == 200
        assert http.get("/v1/costs", params={"day": "2024-02-29"}).json()["day"] == "2024-02-29"
        assert http.get("/v1/fleet/history", params={"minutes": "5"}).status_code == 200
        with http.stream("GET", "/v1/events", params={"recent": "false"}) as stream:
            assert stream.status_code == 200


def test_every_status_a_route_answers_is_documented(document: dict) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if operation.get("security"):
                assert {"401", "403", "422", "429", "500", "503"} <= statuses, (method, path, statuses)
            if path.startswith("/v1/files/"):
                assert {"403", "404", "500"} <= statuses, (method, path, statuses)
    assert {"200", "503"} <= set(document["paths"]["/healthz"]["get"]["responses"])
    cancel = document["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert {"200", "202", "404", "409"} <= set(cancel)
    assert "delete" not in document["paths"]["/v1/jobs/{job_id}"]  # a cancel keeps the record: not a DELETE


def test_a_cancel_is_a_post_and_the_record_stays(served: Served) -> None:
    with served.http() as http:
        job = http.post("/v1/jobs", json={"prompt": "a cat"}).json()
        canceled = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"
        refused = http.delete(f"/v1/jobs/{job['id']}")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert json.loads(canceled.text)["id"] == job["id"]
