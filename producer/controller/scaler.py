"""Deciding how many workers the work needs, and raising the provider's capacity to it. Never lowering it.

Desired workers = ceil(work remaining ÷ per-worker concurrency), within [min, max]. The scaler only ever raises
capacity: a busy worker is never killed to shrink the group. Workers leave on their own once idle (and retire
their machine), which lowers the group's size from the inside.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .providers import CapacityProvider, ProviderError
from .work import QueueWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalingPolicy:
    """Bounds and per-worker concurrency."""

    min_workers: int = 0
    max_workers: int = 10
    worker_concurrency: int = 1

    def desired(self, work_remaining: int) -> int:
        """Workers that `work_remaining` messages need."""
        wanted = math.ceil(work_remaining / self.worker_concurrency)
        return max(self.min_workers, min(self.max_workers, wanted))


@dataclass(frozen=True)
class Decision:
    """One scaling decision: what the work was, what it needs, what the provider had, and what was done."""

    work: QueueWork
    desired: int
    capacity: int | None  #: the provider's target size before the decision (None: nothing to read)
    action: str  #: raise | hold | cooldown | report | error (and would-raise in a dry run)
    target: int | None  #: the target size afterwards
    detail: str = ""

    def describe(self) -> str:
        """One line: the work figures (in-flight included), desired workers, and the action."""
        capacity = "?" if self.capacity is None else str(self.capacity)
        target = "" if self.target is None or self.target == self.capacity else f" -> {self.target}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.work.describe()} desired={self.desired} capacity={capacity} action={self.action}{target}{detail}"


class Scaler:
    """Raises `provider`'s capacity to what the work needs, at most once per `cooldown_s`."""

    def __init__(
        self,
        provider: CapacityProvider,
        policy: ScalingPolicy,
        *,
        cooldown_s: float,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.cooldown_s = cooldown_s
        self.refresh_s = refresh_s
        self.clock = clock
        self._capacity: int | None = None
        self._read_at = -math.inf
        self._raised_at = -math.inf

    def decide(self, work: QueueWork, *, dry_run: bool = False) -> Decision:
        """Decide (and, unless `dry_run`, act) for the current work."""
        desired = self.policy.desired(work.work_remaining)
        now = self.clock()
        try:
            # Re-read when stale, or before a raise: workers that retired may have lowered the size meanwhile.
            if self._capacity is None or desired > self._capacity or now - self._read_at >= self.refresh_s:
                self._capacity, self._read_at = self.provider.capacity(), now
            before = self._capacity
            if before is None:
                return Decision(work, desired, None, "report", None, f"provider {self.provider.name} has no size")
            if desired <= before:
                return Decision(work, desired, before, "hold", before)
            if now - self._raised_at < self.cooldown_s:
                left = self.cooldown_s - (now - self._raised_at)
                return Decision(work, desired, before, "cooldown", before, f"next raise in {left:.1f} s")
            if dry_run:
                return Decision(work, desired, before, "would-raise", desired, "dry run: nothing changed")
            after = self.provider.raise_to(desired)
        except ProviderError as exc:
            log.warning("scaling: %s", exc)
            return Decision(work, desired, self._capacity, "error", self._capacity, str(exc))
        self._raised_at = now
        self._capacity = after
        action = "raise" if after is not None and after > before else "hold"
        detail = "" if action == "raise" else "group at its maximum"
        if action == "raise":
            log.info(
                "scaling %s from %d to %s workers (work %d)", self.provider.name, before, after, work.work_remaining
            )
        return Decision(work, desired, before, action, after, detail)
