"""The capacity providers over real HTTP: AWS against moto's server, Azure and GCP against a local server that
answers like Azure Resource Manager and Compute Engine (no emulator of either exists) and records each request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from producer.controller.providers import NoProvider, ProviderError, open_provider
from producer.controller.providers.azure import API_VERSION, VirtualMachineScaleSet
from producer.controller.providers.gcp import ManagedInstanceGroup
from producer.settings import ControllerSettings

VMSS = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachineScaleSets/gpu"
MIG = "/compute/v1/projects/proj-1/zones/us-central1-a/instanceGroupManagers/gpu"


class FakeCloud:
    """A group of `size` machines behind ARM's and Compute Engine's URL shapes; every request is recorded."""

    def __init__(self) -> None:
        self.size = 1
        self.requests: list[tuple[str, str, dict[str, list[str]], Any, str]] = []
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                cloud.requests.append((method, url.path, parse_qs(url.query), body, self.headers["Authorization"]))
                if url.path == VMSS and method == "GET":
                    reply: dict[str, Any] | None = {"sku": {"name": "Standard_NC4as_T4_v3", "capacity": cloud.size}}
                elif url.path == VMSS and method == "PATCH":
                    cloud.size = body["sku"]["capacity"]
                    reply = {"sku": {"capacity": cloud.size}}
                elif url.path == MIG and method == "GET":
                    reply = {"name": "gpu", "targetSize": cloud.size}
                elif url.path == MIG + "/resize" and method == "POST":
                    cloud.size = int(parse_qs(url.query)["size"][0])
                    reply = {"kind": "compute#operation", "status": "RUNNING"}
                else:
                    reply = None
                data = json.dumps(reply or {"error": {"code": "NotFound"}}).encode()
                self.send_response(200 if reply else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_PATCH(self) -> None:
                self._answer("PATCH")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def changes(self) -> list[tuple[str, str, dict[str, list[str]], Any, str]]:
        return [r for r in self.requests if r[0] != "GET"]


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    fake = FakeCloud()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_azure_raises_the_scale_sets_capacity_and_never_lowers_it(cloud: FakeCloud) -> None:
    vmss = VirtualMachineScaleSet("sub-1", "rg-1", "gpu", management_url=cloud.url, token=lambda: "tok", max_capacity=5)
    assert vmss.capacity() == 1
    assert vmss.raise_to(3) == 3 and cloud.size == 3
    assert vmss.raise_to(2) == 3 and vmss.raise_to(0) == 3  # lower: nothing sent
    assert vmss.raise_to(50) == 5  # clamped to the maximum
    [first, second] = cloud.changes()
    assert first[:4] == ("PATCH", VMSS, {"api-version": [API_VERSION]}, {"sku": {"capacity": 3}})
    assert first[4] == "Bearer tok" and second[3] == {"sku": {"capacity": 5}}


def test_gcp_resizes_the_managed_instance_group_upwards_only(cloud: FakeCloud) -> None:
    mig = ManagedInstanceGroup(
        "proj-1", "gpu", zone="us-central1-a", compute_url=cloud.url, token=lambda: "tok", max_capacity=10
    )
    assert mig.capacity() == 1
    assert mig.raise_to(4) == 4 and mig.raise_to(1) == 4
    assert [(m, p, q) for m, p, q, _, _ in cloud.changes()] == [("POST", MIG + "/resize", {"size": ["4"]})]


def test_a_cloud_error_is_a_provider_error_not_a_crash(cloud: FakeCloud) -> None:
    wrong = ManagedInstanceGroup("proj-1", "nope", zone="us-central1-a", compute_url=cloud.url, token=lambda: "t")
    with pytest.raises(ProviderError, match="404"):
        wrong.capacity()
    unreachable = VirtualMachineScaleSet("s", "r", "v", management_url="http://127.0.0.1:9", token=lambda: "t")
    with pytest.raises(ProviderError, match="unreachable"):
        unreachable.raise_to(1)


def test_the_settings_name_what_each_provider_needs() -> None:
    with pytest.raises(ValueError, match="SDQ_AWS_ASG_NAME"):
        ControllerSettings(provider="aws")
    with pytest.raises(ValueError, match="SDQ_GCP_ZONE or SDQ_GCP_REGION"):
        ControllerSettings(provider="gcp", gcp_project="p", gcp_mig_name="g")
    with pytest.raises(ValueError, match="SDQ_MIN_WORKERS"):
        ControllerSettings(min_workers=5, max_workers=2)
    provider = open_provider(ControllerSettings(provider="kubernetes"))
    assert isinstance(provider, NoProvider) and provider.name == "kubernetes" and provider.capacity() is None
    regional = open_provider(
        ControllerSettings(provider="gcp", gcp_project="p", gcp_mig_name="g", gcp_region="europe-west4")
    )
    assert isinstance(regional, ManagedInstanceGroup)
    assert regional.url.endswith("/compute/v1/projects/p/regions/europe-west4/regionInstanceGroupManagers/g")
