"""An Azure VM Scale Set: raise `sku.capacity` through Azure Resource Manager (REST; token from azure-identity).

Instances retire themselves by deleting their own VM from the scale set, so the controller never lowers it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from .base import ProviderError

API_VERSION = "2024-07-01"
_SCOPE = "https://management.azure.com/.default"


def _default_token() -> str:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ProviderError("the Azure provider needs azure-identity: pip install 'sdqueue[azure]'") from exc
    return str(DefaultAzureCredential().get_token(_SCOPE).token)


class VirtualMachineScaleSet:
    """One VM Scale Set. `token` returns a bearer token for ARM (default: azure-identity's credential chain)."""

    name = "azure"

    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        scale_set: str,
        *,
        management_url: str = "https://management.azure.com",
        token: Callable[[], str] = _default_token,
        max_capacity: int | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = (
            f"{management_url.rstrip('/')}/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"
        )
        self.token = token
        self.max_capacity = max_capacity
        self.http = http or httpx.Client(timeout=30)

    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.http.request(
                method,
                self.url,
                params={"api-version": API_VERSION},
                json=body,
                headers={"Authorization": f"Bearer {self.token()}"},
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"Azure Resource Manager unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise ProviderError(f"Azure {method} {self.url}: {response.status_code} {response.text[:300]}")
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    def capacity(self) -> int | None:
        return int(self._call("GET")["sku"]["capacity"])

    def raise_to(self, count: int) -> int | None:
        current = int(self._call("GET")["sku"]["capacity"])
        target = count if self.max_capacity is None else min(count, self.max_capacity)
        if target <= current:
            return current
        # PATCH of sku.capacity alone: ARM leaves every other property (and running instances) as they are.
        self._call("PATCH", {"sku": {"capacity": target}})
        return target
