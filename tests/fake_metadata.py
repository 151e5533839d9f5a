"""A real HTTP server on loopback that plays the three clouds' metadata services (and two control-plane calls).

It is a fake because no emulator of these services exists that runs here: moto covers the AWS *APIs* (we use its
server for Auto Scaling), but not IMDS spot notices; nothing emulates GCE's metadata server or Azure's IMDS and
Scheduled Events. The fake follows the documented protocols closely enough to exercise the real client code:

* AWS IMDSv2: `PUT /latest/api/token` (with a TTL header) → token; every GET must carry it (401 otherwise);
  `spot/instance-action` and `events/recommendations/rebalance` are 404 until the test sets them.
* GCP: every request needs `Metadata-Flavor: Google` (403 otherwise); `instance/preempted` answers FALSE/TRUE with
  an ETag and honours `wait_for_change=true&last_etag=…&timeout_sec=…` by holding the request until a change.
* Azure: every request needs `Metadata: true` (400 otherwise); Scheduled Events GET lists events, POST takes
  `StartRequests` (recorded in `acknowledged`); instance compute metadata and a managed-identity token.
* Control planes for self-retire: Azure Resource Manager's VM Scale Set `delete` / VM DELETE and GCE's
  `instanceGroupManagers/deleteInstances`, recorded in `retire_calls` with their bearer token checked.

Tests flip notices with `aws_spot(...)`, `gcp_preempt()`, `azure_preempt(...)`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

AWS_TOKEN = "fake-imds-session-token"
CLOUD_TOKEN = "fake-bearer-token"


@dataclass
class MetadataState:
    """What the fake serves; change it through `FakeMetadata`'s methods (they wake waiting GCP requests)."""

    instance_id: str = "i-0123456789abcdef0"
    region: str = "us-east-1"
    spot_action: dict[str, str] | None = None
    rebalance: dict[str, str] | None = None
    gcp_preempted: bool = False
    gcp_name: str = "sdq-gpu-abcd"
    gcp_zone: str = "us-central1-a"
    gcp_manager: str = "projects/123456/zones/us-central1-a/instanceGroupManagers/sdq-gpu"
    azure_events: list[dict[str, Any]] = field(default_factory=list)
    azure_incarnation: int = 1
    azure_compute: dict[str, str] = field(
        default_factory=lambda: {
            "name": "sdq-vmss_7",
            "vmScaleSetName": "sdq-vmss",
            "subscriptionId": "00000000-0000-0000-0000-000000000001",
            "resourceGroupName": "sdq-rg",
            "location": "eastus",
        }
    )
    acknowledged: list[str] = field(default_factory=list)
    retire_calls: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0


class FakeMetadata:
    """Start with `start()` (or as a context manager); `url` is the base URL for every provider's setting."""

    def __init__(self) -> None:
        self.state = MetadataState()
        self.changed = threading.Condition()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-metadata", daemon=True)

    def start(self) -> FakeMetadata:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.changed:
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeMetadata:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what tests flip ---

    def aws_spot(self, *, in_s: float = 120.0, action: str = "terminate") -> None:
        """Post an EC2 spot instance-action `in_s` seconds from now."""
        when = datetime.now(timezone.utc) + timedelta(seconds=in_s)
        self._change(spot_action={"action": action, "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def aws_rebalance(self) -> None:
        """Post an EC2 rebalance recommendation."""
        self._change(rebalance={"noticeTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})

    def gcp_preempt(self) -> None:
        """Flip GCE `instance/preempted` to TRUE."""
        self._change(gcp_preempted=True)

    def azure_preempt(self, *, in_s: float = 30.0, event_type: str = "Preempt") -> str:
        """Schedule an Azure `Preempt` event for this VM `in_s` seconds from now; returns its EventId."""
        event_id = f"evt-{len(self.state.azure_events) + 1}"
        event = {
            "EventId": event_id,
            "EventType": event_type,
            "ResourceType": "VirtualMachine",
            "Resources": [self.state.azure_compute["name"]],
            "EventStatus": "Scheduled",
            "NotBefore": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=in_s), usegmt=True),
            "Description": "fake eviction",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
        self._change(azure_events=[*self.state.azure_events, event], azure_incarnation=self.state.azure_incarnation + 1)
        return event_id

    def reset(self) -> None:
        """Withdraw every notice and forget recorded calls."""
        with self.changed:
            self.state = MetadataState()
            self.changed.notify_all()

    def _change(self, **fields: Any) -> None:
        with self.changed:
            for name, value in fields.items():
                setattr(self.state, name, value)
            self.changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeMetadata
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state, not logs
        pass

    def do_PUT(self) -> None:
        self._count()
        if self.path == "/latest/api/token":
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if not ttl or not 1 <= int(ttl) <= 21600:
                return self._send(400, "missing or bad X-aws-ec2-metadata-token-ttl-seconds")
            return self._send(200, AWS_TOKEN)
        self._send(404, "not found")

    def do_GET(self) -> None:
        self._count()
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path.startswith("/latest/"):
            return self._aws(parts.path)
        if parts.path.startswith("/computeMetadata/"):
            return self._gcp(parts.path, query)
        if parts.path.startswith("/metadata/"):
            return self._azure_get(parts.path, query)
        self._send(404, "not found")

    def do_POST(self) -> None:
        self._count()
        parts = urlsplit(self.path)
        body = self._body()
        if parts.path == "/metadata/scheduledevents":
            if self.headers.get("Metadata") != "true":
                return self._send(400, "Metadata header required")
            for start in body.get("StartRequests", []):
                self.fake.state.acknowledged.append(start["EventId"])
            return self._send(200, "")
        if parts.path.endswith("/deleteInstances") or parts.path.endswith("/delete"):
            return self._retire("POST", parts.path, body)
        self._send(404, "not found")

    def do_DELETE(self) -> None:
        self._count()
        self._retire("DELETE", urlsplit(self.path).path, {})

    # --- AWS IMDSv2 ---

    def _aws(self, path: str) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != AWS_TOKEN:
            return self._send(401, "")
        state = self.fake.state
        values: dict[str, Any] = {
            "/latest/meta-data/instance-id": state.instance_id,
            "/latest/meta-data/placement/region": state.region,
            "/latest/meta-data/spot/instance-action": state.spot_action and json.dumps(state.spot_action),
            "/latest/meta-data/events/recommendations/rebalance": state.rebalance and json.dumps(state.rebalance),
        }
        value = values.get(path)
        if value is None:
            return self._send(404, "Not Found")
        self._send(200, value)

    # --- GCP metadata server ---

    def _gcp(self, path: str, query: dict[str, str]) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._send(403, "Missing Metadata-Flavor:Google header.")
        base = "/computeMetadata/v1/"
        name = path[len(base) :] if path.startswith(base) else ""
        if name == "instance/preempted":
            return self._gcp_preempted(query)
        state = self.fake.state
        values = {
            "instance/name": state.gcp_name,
            "instance/zone": f"projects/123456/zones/{state.gcp_zone}",
            "instance/attributes/created-by": state.gcp_manager,
            "project/project-id": "sdq-project",
            "instance/service-accounts/default/token": json.dumps(
                {"access_token": CLOUD_TOKEN, "expires_in": 3599, "token_type": "Bearer"}
            ),
        }
        if name not in values:
            return self._send(404, "not found")
        self._send(200, values[name], content_type="application/json" if name.endswith("token") else "text/plain")

    def _gcp_preempted(self, query: dict[str, str]) -> None:
        def current() -> tuple[str, str]:
            value = "TRUE" if self.fake.state.gcp_preempted else "FALSE"
            return value, hashlib.sha1(value.encode()).hexdigest()[:16]

        value, etag = current()
        if query.get("wait_for_change") == "true":
            deadline = time.monotonic() + float(query.get("timeout_sec", "60"))
            last = query.get("last_etag", etag)
            with self.fake.changed:
                while last == etag and (left := deadline - time.monotonic()) > 0:
                    self.fake.changed.wait(left)
                    value, etag = current()
        self._send(200, value, headers={"ETag": etag})

    # --- Azure IMDS ---

    def _azure_get(self, path: str, query: dict[str, str]) -> None:
        if self.headers.get("Metadata") != "true":
            return self._send(400, json.dumps({"error": "Bad request. Required metadata header not specified"}))
        if "api-version" not in query:
            return self._send(400, json.dumps({"error": "Bad request. api-version was not specified"}))
        state = self.fake.state
        if path == "/metadata/scheduledevents":
            return self._send(
                200, json.dumps({"DocumentIncarnation": state.azure_incarnation, "Events": state.azure_events})
            )
        if path == "/metadata/instance/compute":
            return self._send(200, json.dumps(state.azure_compute))
        if path == "/metadata/instance/compute/name" and query.get("format") == "text":
            return self._send(200, state.azure_compute["name"])
        if path == "/metadata/identity/oauth2/token" and query.get("resource"):
            return self._send(200, json.dumps({"access_token": CLOUD_TOKEN, "token_type": "Bearer"}))
        self._send(404, "not found")

    # --- control planes (self-retire) ---

    def _retire(self, method: str, path: str, body: dict[str, Any]) -> None:
        if self.headers.get("Authorization") != f"Bearer {CLOUD_TOKEN}":
            return self._send(401, json.dumps({"error": "missing or bad bearer token"}))
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        self.fake.state.retire_calls.append({"method": method, "path": path, "query": query, "body": body})
        self._send(202 if "deleteInstances" not in path else 200, json.dumps({"status": "accepted"}))

    # --- plumbing ---

    def _count(self) -> None:
        self.fake.state.requests += 1

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _send(
        self, status: int, body: str, *, content_type: str = "text/plain", headers: dict[str, str] | None = None
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
