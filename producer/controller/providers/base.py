"""What the scaler drives: a group of GPU machines whose target size it can read and raise."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ...errors import ProducerError


class ProviderError(ProducerError):
    """The cloud API refused or failed a capacity read or change (the scaler retries on its next tick)."""


@runtime_checkable
class CapacityProvider(Protocol):
    """A group of workers with a target size. The controller only ever raises it: workers retire themselves."""

    #: Short name for logs and metrics (`aws`, `azure`, `gcp`, `kubernetes`, `none`).
    name: str

    def capacity(self) -> int | None:
        """The group's current target size; None when the provider has no size to read (KEDA, none)."""
        ...

    def raise_to(self, count: int) -> int | None:
        """Make the target size at least `count` (clamped to the group's maximum); never lowers it.

        Returns the target size afterwards (None when there is nothing to drive)."""
        ...


class NoProvider:
    """Nothing to drive: with `kubernetes`, KEDA reads GET /v1/scaling; with `none`, decisions are only reported."""

    def __init__(self, name: str = "none") -> None:
        self.name = name

    def capacity(self) -> int | None:
        return None

    def raise_to(self, count: int) -> int | None:
        return None
