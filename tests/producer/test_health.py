"""`/healthz` is for anyone (probes carry no key), so it says what is wrong without the details."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.support import free_port, make_app


def test_an_unreachable_redis_is_reported_without_its_error_text(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connecting is refused
    with TestClient(make_app(f"redis://127.0.0.1:{port}/0", tmp_path, auth=False)) as http:
        response = http.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "unreachable"}
    assert str(port) not in response.text and "refused" not in response.text.lower()
