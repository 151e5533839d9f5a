"""A rotatable credential: the current value and the ones it replaced, each valid until its overlap ends.

An API key holds two rings of `whsec_…` secrets (inbound: verifies jobs its systems push to `/v1/hooks/jobs`;
outbound: signs the webhooks sent for its jobs). Rotating adds a new value in front and gives every older one an
end (`until`, Unix seconds); a value past its end is dropped on the next write and ignored on every read. During
the overlap every live value counts: inbound messages verify against any of them, and outbound messages carry one
`v1,` signature per live value (Standard Webhooks allows several, space-separated), so a receiver holding either
the old or the new secret accepts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """One value of a ring; `until` is None for the current one (it never ends by itself)."""

    value: str
    until: float | None = None

    def live(self, now: float) -> bool:
        return self.until is None or self.until > now


def decode(text: str | None) -> list[Held]:
    """A ring as stored (JSON, newest first); empty for None or ''."""
    if not text:
        return []
    items = json.loads(text)
    return [Held(str(i["value"]), None if i.get("until") is None else float(i["until"])) for i in items]


def encode(ring: list[Held]) -> str:
    """A ring as stored: JSON, newest first."""
    return json.dumps([{"value": held.value, "until": held.until} for held in ring], separators=(",", ":"))


def live(ring: list[Held], now: float) -> tuple[str, ...]:
    """The values that count at `now`, newest first."""
    return tuple(held.value for held in ring if held.live(now))


def rotated(ring: list[Held], new: str, *, now: float, overlap_s: float) -> list[Held]:
    """`ring` with `new` in front: every older live value stays valid `overlap_s` more (never longer than it
    already was); ended ones are dropped. `overlap_s` = 0 ends the old values at once."""
    end = now + overlap_s
    kept = [Held(held.value, end if held.until is None else min(held.until, end)) for held in ring if held.live(now)]
    return [Held(new), *(held for held in kept if held.live(now))]
