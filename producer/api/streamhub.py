"""One poller per API process (per event loop) for every open event stream, instead of one Redis poll per stream.

Each tick (`TICK_S`) the hub reads the status and progress of every job any stream watches in one pipelined
round trip and hands each stream its jobs' values, waking it only when they changed (an idle stream costs the
process a dict comparison per tick, not a coroutine resumed ten times a second); every
`StreamLimits.heartbeat_s` the same round trip also refreshes every stream's slot and re-reads its key's
`revoked` field (`producer/streamslots.py`), so a revoked key's streams end within a heartbeat; and every
`OUTLOOK_S` it reads the place in line of every job whose stream wants one (`outlooks`) and the fleet snapshot
ETAs come from, so a queued job's stream needs no Redis call of its own to say where it stands. With 500 streams
open that is ten round trips a second for the process, not 5,500. The hub runs only while some stream is
subscribed; a hub task that died of a bug is started again by its own done callback while streams remain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from .. import jobhash, keys
from ..eta import Forecaster, Pace
from ..streamslots import Lease, StreamSlots

log = logging.getLogger(__name__)

#: How often the hub reads the watched jobs. Steps of a fast model may be coalesced; a status never is lost (a
#: stream that sees a new status reads the whole record).
TICK_S = 0.1
#: How often places in line and the fleet snapshot are read (a stream's `queue` event comes at most this often).
OUTLOOK_S = 1.0

Raw = tuple[str | None, str | None]  # a job's (status, progress JSON) as the hash holds them; (None, None): gone
Outlook = tuple[dict[str, int | None], Pace]
_RUNNING = "running"


class Subscription:
    """What one stream watches (`ids`, which the stream may change) and what the hub last read of them."""

    def __init__(self, hub: StreamHub, ids: Iterable[str], lease: Lease | None, *, outlooks: bool = False) -> None:
        self.hub = hub
        self.ids = set(ids)
        self.lease = lease
        self.outlooks = outlooks
        self.latest: dict[str, Raw] = {}
        self._outlook: Outlook | None = None  # read by the hub, not yet taken by the stream
        self._outlook_seen: tuple[object, ...] | None = None
        #: Why the stream must end now (its key was revoked, or Redis failed), else None.
        self.ended: str | None = None
        #: How often `next_tick` returned: an idle stream's stays put while the hub ticks on (tests read it).
        self.wakes = 0
        self._tick = asyncio.Event()

    async def next_tick(self, deadline: float | None = None) -> None:
        """Wait until the hub found something new for this stream (its jobs' values, their places in line, the
        fleet's pace) or ended it, or until `deadline` (`time.monotonic()`) has passed."""
        if deadline is None:
            await self._tick.wait()
        elif not self._tick.is_set():
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tick.wait(), timeout=max(0.0, deadline - time.monotonic()))
        self._tick.clear()
        self.wakes += 1

    def take_outlook(self) -> Outlook | None:
        """For a stream that wants `outlooks`: each job's place in line (None: not in line) and the fleet snapshot,
        once after the hub read them and found them changed; else None."""
        outlook, self._outlook = self._outlook, None
        return outlook

    def _deliver(self, values: dict[str, Raw], outlook: Outlook | None) -> None:
        latest = {job_id: values.get(job_id, (None, None)) for job_id in self.ids}
        changed = latest != self.latest
        self.latest = latest
        if outlook is not None and self.outlooks:
            places, pace = outlook
            # A queued job's ETA depends on its place and the fleet's pace, not on when it was read; a running
            # job's counts down, so its stream hears of every snapshot.
            seen = (sorted((i, places.get(i)) for i in self.ids), dataclasses.replace(pace, at=0.0))
            running = any(status == _RUNNING for status, _ in latest.values())
            if running or seen != self._outlook_seen:
                self._outlook_seen = seen
                self._outlook = outlook
                changed = True
        if changed:
            self._tick.set()

    def _end(self, reason: str) -> None:
        self.ended = reason
        self._tick.set()


class StreamHub:
    """The poller of one event loop; `subscribe` while streaming."""

    def __init__(self, slots: StreamSlots, forecaster: Forecaster | None = None) -> None:
        self.slots = slots
        self.forecaster = forecaster
        self.client = slots.client
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def of(http: Request) -> StreamHub:
        """The hub of the app serving `http`, in the running event loop (tests may run several loops)."""
        hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = http.app.state.stream_hubs
        loop = asyncio.get_running_loop()
        hub = hubs.get(loop)
        if hub is None:
            hub = hubs[loop] = StreamHub(http.app.state.stream_slots, http.app.state.deps.forecaster)
        return hub

    @contextmanager
    def subscribe(self, ids: Iterable[str], lease: Lease | None, *, outlooks: bool = False) -> Iterator[Subscription]:
        """Watch `ids` (with `outlooks`: their places in line too) for as long as the block runs."""
        sub = Subscription(self, ids, lease, outlooks=outlooks)
        self._subs.add(sub)
        self._ensure_running()
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sdq-stream-hub")
            self._task.add_done_callback(self._died)

    def _died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("event streams: the poller failed", exc_info=task.exception())
        if self._subs:  # streams wait on it and on nothing else: never leave them hanging
            self._ensure_running()

    async def _run(self) -> None:
        refreshed = looked = time.monotonic()
        while self._subs:
            await asyncio.sleep(TICK_S)
            subs = list(self._subs)
            ids = sorted({job_id for sub in subs for job_id in sub.ids})
            heartbeat = time.monotonic() - refreshed >= self.slots.limits.heartbeat_s
            leased = [sub for sub in subs if sub.lease is not None] if heartbeat else []
            ranked: list[str] | None = None
            if self.forecaster is not None and time.monotonic() - looked >= OUTLOOK_S:
                looked = time.monotonic()
                ranked = sorted({job_id for sub in subs if sub.outlooks for job_id in sub.ids})
            try:
                values, live, outlook = await run_in_threadpool(
                    self._read, ids, [s.lease for s in leased if s.lease], ranked
                )
            except Exception:  # a Redis outage ends the streams (clients resume); the hub keeps running
                log.warning("event streams: reading %d jobs failed", len(ids), exc_info=True)
                for sub in subs:
                    sub._end("redis")
                continue
            if heartbeat:
                refreshed = time.monotonic()
                for sub, ok in zip(leased, live, strict=True):
                    if not ok:
                        sub._end("revoked")
            for sub in subs:
                sub._deliver(values, outlook)

    def _read(
        self, ids: list[str], leases: list[Lease], ranked: list[str] | None
    ) -> tuple[dict[str, Raw], list[bool], Outlook | None]:
        """Every watched job's (status, progress), the leases' heartbeats and (`ranked`) places in line, in one
        pipelined round trip (the fleet snapshot, read at most once a second, is one more)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), jobhash.WATCHED_FIELDS)
        for lease in leases:
            self.slots.queue_refresh(pipe, lease)
        for job_id in ranked or ():
            pipe.zrank(keys.LINE, job_id)
        results = pipe.execute() if ids or leases or ranked else []
        values = {job_id: (_text(raw[0]), _text(raw[1])) for job_id, raw in zip(ids, results, strict=False)}
        live = [bool(int(ok)) for ok in results[len(ids) : len(ids) + len(leases)]]
        if ranked is None or self.forecaster is None:
            return values, live, None
        ranks = results[len(ids) + len(leases) :]
        places = {job_id: None if rank is None else int(rank) for job_id, rank in zip(ranked, ranks, strict=True)}
        return values, live, (places, self.forecaster.pace())


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
