"""A keyed `POST /v1/jobs` is one Redis round trip (the key check and the create in one script), and it answers
what the two separate steps answered. Commands are watched with MONITOR on a real redis-server: it shows each
command a client sent, and apart from those ("lua") the commands scripts ran."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from producer.apikeys import KeyStore, Role
from producer.embedded import EmbeddedRedis
from tests.support import make_app

pytestmark = pytest.mark.redis

JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}
_END = "sdq-test-end-of-commands"


def _sent(redis_server: str, act: Callable[[], Any]) -> list[str]:
    """The commands clients sent to Redis (not those scripts ran) while `act` ran, by name."""
    watcher, marker = redis.Redis.from_url(redis_server), redis.Redis.from_url(redis_server)
    marker.ping()  # connected before: its handshake is not among the commands watched
    try:
        with watcher.monitor() as monitor:
            act()
            marker.echo(_END)
            sent = []
            while (command := monitor.next_command())["command"] != f"ECHO {_END}":
                if command["client_type"] != "lua":
                    sent.append(command["command"].split(" ", 1)[0].upper())
            return sent
    finally:
        watcher.close()
        marker.close()


@pytest.fixture
def api(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    redis_client.flushdb()
    with TestClient(make_app(redis_server, tmp_path, max_queued_jobs=2)) as client:
        yield client


def _auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def test_a_keyed_submission_is_one_round_trip(api: TestClient, redis_server: str, redis_client: redis.Redis) -> None:
    _, token = KeyStore(redis_client).create("acme", rate_per_s=1000, burst=1000, max_queued_jobs=100)
    assert api.post("/v1/jobs", json=JOB, headers=_auth(token)).status_code == 202  # loads the script once
    answers = []

    def submit() -> None:
        answers.append(api.post("/v1/jobs", json=JOB, headers=_auth(token)))
        answers.append(api.post("/v1/jobs", json=JOB, headers=_auth(token, **{"Idempotency-Key": "order-7"})))

    assert _sent(redis_server, submit) == ["EVALSHA", "EVALSHA"]
    assert [a.status_code for a in answers] == [202, 202]
    record = answers[1].json()
    assert record["tenant"] == "acme" and record["status"] == "queued" and record["queue_position"] == 2
    # What was written is what was answered: the GET reads it back from the hash.
    stored = api.get(answers[1].headers["location"], headers=_auth(token)).json()
    assert {**stored, "eta_s": None} == {**record, "eta_s": None}
    fields = redis_client.hgetall(f"sdq:job:{record['id']}")
    assert fields[b"tenant"] == b"acme" and fields[b"key_id"] == token.split("_")[1].encode()
    assert redis_client.get(f"sdq:apikey:{token.split('_')[1]}:queued_count") == b"3"
    claim = redis_client.get("sdq:idem:jobs:acme:order-7")  # scoped by the tenant the script read from the key
    assert claim is not None and claim.split(b" ")[0] == record["id"].encode()


def test_a_replayed_idempotency_key_answers_the_first_job(api: TestClient, redis_client: redis.Redis) -> None:
    _, token = KeyStore(redis_client).create("acme")
    headers = _auth(token, **{"Idempotency-Key": "k1"})
    first, again = (api.post("/v1/jobs", json=JOB, headers=headers) for _ in range(2))
    assert first.status_code == again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and redis_client.llen("dramatiq:sdq-generate") == 1
    other = api.post("/v1/jobs", json={**JOB, "prompt": "another"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_no_key_or_a_malformed_one_is_401_without_redis_or_reading_the_body(api: TestClient, redis_server: str) -> None:
    answers = []

    def submit() -> None:
        answers.append(api.post("/v1/jobs", json=JOB))
        answers.append(api.post("/v1/jobs", json=JOB, headers=_auth("not-a-key")))
        answers.append(api.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}))

    assert _sent(redis_server, submit) == []
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert all(a.json()["error"]["code"] == "unauthenticated" for a in answers)
    assert answers[0].headers["www-authenticate"] == "Bearer"


def test_revoked_wrong_and_unknown_keys_are_401_in_one_round_trip(
    api: TestClient, redis_server: str, redis_client: redis.Redis
) -> None:
    store = KeyStore(redis_client)
    _, live = store.create("acme")
    assert api.post("/v1/jobs", json=JOB, headers=_auth(live)).status_code == 202  # loads the script once
    revoked, token = store.create("acme")
    store.revoke(revoked.id)
    wrong = live[:-4] + ("AAAA" if not live.endswith("AAAA") else "BBBB")
    unknown = "sdq_" + "0" * 16 + "_" + "a" * 43
    answers: list[Any] = []

    def submit() -> None:
        answers.extend(api.post("/v1/jobs", json=JOB, headers=_auth(t)) for t in (token, wrong, unknown))

    assert _sent(redis_server, submit) == ["EVALSHA"] * 3
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert {a.json()["error"]["message"] for a in answers} == {"invalid or revoked API key"}
    assert redis_client.llen("dramatiq:sdq-generate") == 1


def test_rate_quota_and_role_refusals_keep_their_answers(api: TestClient, redis_client: redis.Redis) -> None:
    store = KeyStore(redis_client)
    _, slow = store.create("acme", rate_per_s=0.01, burst=1)
    assert api.post("/v1/jobs", json=JOB, headers=_auth(slow)).status_code == 202
    limited = api.post("/v1/jobs", json=JOB, headers=_auth(slow))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert "rate limit of 0.01 requests/s (burst 1) exceeded" in limited.json()["error"]["message"]
    assert int(limited.headers["retry-after"]) >= 1
    _, quota = store.create("beta")  # the server's default quota: 2 queued jobs
    assert [api.post("/v1/jobs", json=JOB, headers=_auth(quota)).status_code for _ in range(3)] == [202, 202, 429]
    refused = api.post("/v1/jobs", json=JOB, headers=_auth(quota))
    assert refused.json()["error"]["code"] == "quota_exceeded" and "already has 2 queued jobs" in refused.text
    _, scaling = store.create("keda", role=Role.SCALING)
    forbidden = api.post("/v1/jobs", json=JOB, headers=_auth(scaling))
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert forbidden.json()["error"]["message"] == (
        "this route needs a key with role `tenant` or `admin`; this key's role is scaling"
    )
    assert redis_client.llen("dramatiq:sdq-generate") == 3


def test_a_bad_key_with_a_bad_body_is_still_401(api: TestClient, redis_client: redis.Redis) -> None:
    store = KeyStore(redis_client)
    revoked, token = store.create("acme")
    store.revoke(revoked.id)
    for body in ({"prompt": ""}, {"prompt": "p", "model": "not-allowed/x" * 50}, {"prompt": "p", "width": 7}):
        assert api.post("/v1/jobs", json=body, headers=_auth(token)).status_code == 401
    _, live = store.create("acme")
    invalid = api.post("/v1/jobs", json={"prompt": "p", "width": 7}, headers=_auth(live))
    assert invalid.status_code == 422 and invalid.json()["error"]["fields"][0]["field"] == "width"


def test_what_the_direct_path_declines_reaches_the_route_with_its_body(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """`SubmitLane` reads the body, then hands a submission it does not answer to FastAPI's route: the route
    reads the same body (replayed) and names the field."""
    _, token = KeyStore(redis_client).create("acme")
    answer = api.post("/v1/jobs", json={**JOB, "width": 63}, headers=_auth(token))
    assert answer.status_code == 422
    assert [field["field"] for field in answer.json()["error"]["fields"]] == ["width"]
    assert api.post("/v1/jobs", json=JOB, headers=_auth(token)).status_code == 202  # and the next one is answered


def test_a_fault_in_the_direct_path_is_an_incident_and_enqueues_nothing(
    api: TestClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the direct path did not expect (a bug) gets the app's 500 answer, with an incident id, as it
    would inside the route: not a bare server error, and no job."""
    from producer.service import JobService

    _, token = KeyStore(redis_client).create("acme")

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(JobService, "prepare", broken)
    answer = api.post("/v1/jobs", json=JOB, headers=_auth(token))
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal"
    assert "incident" in answer.json()["error"]["message"]
    assert redis_client.llen("dramatiq:sdq-generate") == 0 and not list(redis_client.scan_iter("sdq:job:*"))


def test_the_lane_refuses_an_oversized_declared_body_and_a_chunked_one_is_still_counted(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """The lane runs in front of `BodyLimit` now: it answers a declared body over the route's limit with the same
    413, unread; a chunked body (no Content-Length) goes the whole way, where `BodyLimit` counts it."""
    _, token = KeyStore(redis_client).create("acme")
    huge = b'{"prompt": "' + b"x" * (2 << 20) + b'"}'
    declared = api.post("/v1/jobs", content=huge, headers=_auth(token, **{"Content-Type": "application/json"}))
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    chunked = api.post("/v1/jobs", content=chunks(), headers=_auth(token, **{"Content-Type": "application/json"}))
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert not list(redis_client.scan_iter("sdq:job:*"))


def test_with_fastapis_telemetry_on_a_submission_takes_the_whole_stack(
    api: TestClient, redis_server: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an OpenTelemetry provider is configured, submissions go through FastAPI's telemetry and the general
    route (two round trips: the key check, then the create), not around them. Telemetry itself is not set up here
    (a global provider would reach every later test of this process): its switch is, on the app's own check."""
    from producer.api.app import _Telemetry

    _, token = KeyStore(redis_client).create("acme", max_queued_jobs=10)
    app = api.app
    switch = app._lane_telemetry  # type: ignore[attr-defined]
    assert isinstance(switch, _Telemetry)
    monkeypatch.setattr(switch, "on", lambda: True)
    api.post("/v1/jobs", json=JOB, headers=_auth(token)).raise_for_status()  # the route's scripts load
    sent = _sent(redis_server, lambda: api.post("/v1/jobs", json=JOB, headers=_auth(token)).raise_for_status())
    assert [command for command in sent if command != "HELLO"] == ["EVALSHA", "EVALSHA"]
    monkeypatch.undo()
    sent = _sent(redis_server, lambda: api.post("/v1/jobs", json=JOB, headers=_auth(token)).raise_for_status())
    assert sent == ["EVALSHA"]


def test_the_telemetry_switch_asks_fastapi_at_most_once_a_second() -> None:
    from producer.api.app import _Telemetry

    class Native:
        asked = 0

        def enabled(self) -> bool:
            self.asked += 1
            return True

    native = Native()
    switch = _Telemetry(native)
    assert all(switch.on() for _ in range(1000)) and native.asked == 1
    assert _Telemetry(None).on() is False  # a FastAPI without native telemetry: the lane always runs


def test_a_submission_redis_took_but_did_not_answer_says_it_may_have_been_enqueued(tmp_path: Path) -> None:
    # A paused redis-server (SIGSTOP) takes the script and runs it once it resumes: the 503 must not say that
    # nothing was enqueued, and a retry with the same Idempotency-Key must find the one job that was.
    with EmbeddedRedis(tmp_path / "redis") as embedded:
        pid = int((tmp_path / "redis" / "redis.pid").read_text())
        client = redis.Redis.from_url(embedded.url)
        _, token = KeyStore(client).create("acme")
        headers = _auth(token, **{"Idempotency-Key": "order-9"})
        app = make_app(embedded.url, tmp_path)
        with TestClient(app) as api:
            assert api.post("/v1/jobs", json=JOB, headers=_auth(token)).status_code == 202  # connected, script loaded
            app.state.scripts._link.reply_timeout_s = 0.5  # the link is made (5 s in service)
            os.kill(pid, signal.SIGSTOP)
            try:
                lost = api.post("/v1/jobs", json=JOB, headers=headers)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert lost.status_code == 503 and lost.headers["retry-after"] == "5"
            error = lost.json()["error"]
            assert error["code"] == "outcome_unknown" and "Idempotency-Key" in error["message"]
            assert client.zcard("sdq:jobs") == 2  # it was written after all
            again = api.post("/v1/jobs", json=JOB, headers=headers)
            assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
            assert client.zcard("sdq:jobs") == 2
        client.close()


def test_a_redis_that_is_down_still_says_nothing_was_enqueued(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as embedded:
        pid = int((tmp_path / "redis" / "redis.pid").read_text())
        client = redis.Redis.from_url(embedded.url)
        _, token = KeyStore(client).create("acme")
        client.close()
        app = make_app(embedded.url, tmp_path)
        with TestClient(app) as api:
            assert api.post("/v1/jobs", json=JOB, headers=_auth(token)).status_code == 202
            os.kill(pid, signal.SIGKILL)
            _until_refused(embedded.socket)  # gone: a new connection is refused, so nothing can be sent
            # The first call may still find the old connection and lose what it wrote there (outcome_unknown: it
            # cannot tell a dead server from a live one that ran it); once it is dropped, the next one cannot connect.
            answers = [api.post("/v1/jobs", json=JOB, headers=_auth(token)) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [503, 503]
    assert answers[0].json()["error"]["code"] in ("outcome_unknown", "unavailable")
    assert answers[1].json()["error"]["code"] == "unavailable"


def _until_refused(socket: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = redis.Redis(unix_socket_path=str(socket), socket_connect_timeout=1)
        try:
            probe.ping()
        except redis.ConnectionError:
            return
        finally:
            probe.close()
        time.sleep(0.02)
    raise AssertionError("the killed redis-server still answers")
