"""What every event stream shares: a slot under its caller's cap (429 beyond it) and where a resumed stream's
event ids continue from (`Last-Event-ID`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from ..streamslots import Lease, StreamLimits, StreamSlots, holder_of
from .auth import CallerDep


async def _lease(http: Request, caller: CallerDep) -> AsyncIterator[Lease]:
    # A dependency, so that a caller at its cap gets a 429 before the stream starts; it is left after the
    # response ends (FastAPI's request-scoped exit), which frees the slot.
    slots: StreamSlots = http.app.state.stream_slots
    key_id = caller.key.id if caller.key is not None else None
    lease = await run_in_threadpool(slots.acquire, holder_of(key_id, http.client.host if http.client else None), key_id)
    try:
        yield lease
    finally:
        # Not awaited: the request may be being cancelled (the client left), and the slot must go either way;
        # were this lost, the slot would still be pruned once its heartbeats stop.
        asyncio.get_running_loop().run_in_executor(None, slots.release, lease)


#: Use as a stream route's parameter type: the stream's slot.
LeaseDep = Annotated[Lease, Depends(_lease)]


def limits_of(http: Request) -> StreamLimits:
    """The app's stream limits (duration, cap, heartbeat)."""
    slots: StreamSlots = http.app.state.stream_slots
    return slots.limits


def resumed_from(
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="The id of the last event received (browsers send it when they reconnect): the new"
            " stream's ids continue after it.",
        ),
    ] = None,
) -> int:
    """The serial the stream's event ids continue from: `Last-Event-ID` (an id this server gave), else 0."""
    if last_event_id is None or not last_event_id.isdigit() or len(last_event_id) > 15:
        return 0  # not one of ours (a proxy's, another server's): start afresh rather than refuse a reconnect
    return int(last_event_id)


#: Use as a stream route's parameter type: the serial its event ids continue from.
ResumeDep = Annotated[int, Depends(resumed_from)]
