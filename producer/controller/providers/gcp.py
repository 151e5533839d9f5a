"""A GCP managed instance group: raise its target size with `resize` (Compute Engine REST; token from google-auth).

Instances retire themselves by deleting their own instance from the group, so the controller never lowers it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from .base import ProviderError


def _default_token() -> str:
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ProviderError("the GCP provider needs google-auth: pip install 'sdqueue[gcp]'") from exc
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/compute"])
    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    return str(credentials.token)


class ManagedInstanceGroup:
    """One zonal (`zone`) or regional (`region`) managed instance group."""

    name = "gcp"

    def __init__(
        self,
        project: str,
        group: str,
        *,
        zone: str | None = None,
        region: str | None = None,
        compute_url: str = "https://compute.googleapis.com",
        token: Callable[[], str] = _default_token,
        max_capacity: int | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        if bool(zone) == bool(region):
            raise ValueError("name exactly one of zone (zonal group) or region (regional group)")
        where = f"zones/{zone}/instanceGroupManagers" if zone else f"regions/{region}/regionInstanceGroupManagers"
        self.url = f"{compute_url.rstrip('/')}/compute/v1/projects/{project}/{where}/{group}"
        self.token = token
        self.max_capacity = max_capacity
        self.http = http or httpx.Client(timeout=30)

    def _call(self, method: str, path: str = "", params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.request(
                method, self.url + path, params=params, headers={"Authorization": f"Bearer {self.token()}"}
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"Compute Engine unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise ProviderError(f"GCP {method} {self.url + path}: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    def capacity(self) -> int | None:
        return int(self._call("GET")["targetSize"])

    def raise_to(self, count: int) -> int | None:
        current = int(self._call("GET")["targetSize"])
        target = count if self.max_capacity is None else min(count, self.max_capacity)
        if target <= current:
            return current
        self._call("POST", "/resize", {"size": target})
        return target
