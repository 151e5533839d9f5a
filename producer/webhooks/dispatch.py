"""Turning job transitions into webhook messages.

The store's Lua scripts append each transition of a job that has a webhook to a stream in the same atomic step as
the change (lua/_moved.lua), so there is exactly one terminal entry per job: state changes to `keys.EVENTS`, which
only `trim` shortens, below what the group acknowledged; progress to `keys.PROGRESS_EVENTS`, capped, best effort.
The dispatcher reads both streams in a consumer group, builds the event (`WebhookEvent`), records the message in
the delivery log under an id derived from the job and the transition (a re-read entry cannot make a second message)
and enqueues its first attempt. Entries are acknowledged only after that, and entries of a dispatcher that died are
claimed by another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import cast

import redis

from .. import jobhash, keys
from ..errors import JobNotFoundError
from ..jobhash import JobField
from ..jobs import DEFAULT_WEBHOOK_EVENTS, JobRecord, JobStatus, WebhookEvent, WebhookEventType
from ..store import JobStore
from .log import DeliveryLog

log = logging.getLogger(__name__)

GROUP = "sdq-webhooks"
#: An entry a consumer read but did not acknowledge for this long is taken over by another (it died).
CLAIM_IDLE_MS = 60_000
#: The state-change stream first: it is never capped, the progress lane is.
STREAMS = (keys.EVENTS, keys.PROGRESS_EVENTS)
_BY_TRANSITION = {
    "running": WebhookEventType.JOB_STARTED,
    "progress": WebhookEventType.JOB_PROGRESS,
    JobStatus.SUCCEEDED.value: WebhookEventType.JOB_SUCCEEDED,
    JobStatus.FAILED.value: WebhookEventType.JOB_FAILED,
    JobStatus.CANCELED.value: WebhookEventType.JOB_CANCELED,
}

_Entry = tuple[bytes, dict[bytes, bytes]]
#: Enqueues the first attempt of a message.
SendNow = Callable[[str], None]


def message_id(job_id: str, kind: WebhookEventType, *, attempt: str, entry_id: str) -> str:
    """The `webhook-id` of an event: fixed by what happened, so a re-read stream entry maps to the same message.

    A job has one terminal event; it may start more than once (one `job.started` per attempt)."""
    name = kind.value.split(".")[1]
    if kind is WebhookEventType.JOB_STARTED:
        return f"msg_{job_id}_{name}_{attempt}"
    if kind is WebhookEventType.JOB_PROGRESS:
        return f"msg_{job_id}_{name}_{entry_id.replace('-', '_')}"
    return f"msg_{job_id}_{name}"


class Dispatcher:
    """Consumes the events stream; one per `sdq webhooks` process, any number of processes."""

    def __init__(
        self,
        client: redis.Redis,
        store: JobStore,
        deliveries: DeliveryLog,
        send: SendNow,
        *,
        consumer: str,
        progress_interval_s: float = 2.0,
        batch: int = 100,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        self.client = client
        self.store = store
        self.deliveries = deliveries
        self.send = send
        self.consumer = consumer
        self.progress_interval_s = progress_interval_s
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms

    def ensure_group(self) -> None:
        """Create the consumer group on both streams (reading from their start, so no earlier event is missed)."""
        for stream in STREAMS:
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def run(self, stop: threading.Event, *, block_ms: int = 500) -> None:
        """Dispatch until `stop` is set; Redis errors are logged and retried (a webhook never fails a job)."""
        self.ensure_group()
        rounds = 0
        while not stop.is_set():
            try:
                if rounds % 100 == 0:
                    self.reclaim()
                    self.trim()
                self.poll(block_ms=block_ms)
            except redis.RedisError as exc:
                log.warning("webhook dispatcher: Redis error, retrying: %s", exc)
                stop.wait(1.0)
            rounds += 1

    def poll(self, *, block_ms: int = 0) -> int:
        """Dispatch the entries waiting for this consumer on both streams; returns how many were handled.

        Each stream yields up to `batch` entries per call, so a backlog of progress never delays a state change."""
        found = cast(
            list[tuple[bytes, list[_Entry]]] | None,
            self.client.xreadgroup(
                GROUP, self.consumer, dict.fromkeys(STREAMS, ">"), count=self.batch, block=block_ms or None
            ),
        )
        return sum(self._handle_all(stream.decode(), entries) for stream, entries in found or [])

    def reclaim(self, *, max_pages: int = 1000) -> int:
        """Take over the entries a dead consumer left unacknowledged, and dispatch them; returns how many.

        Pages through the whole pending list (a long outage leaves more than one page). An entry whose message
        is gone (trimmed from the progress lane) is dropped from the pending list by XAUTOCLAIM and reported in
        its third reply element; Redis 6.2 returns such an entry with no fields instead: both are acknowledged."""
        handled = 0
        for stream in STREAMS:
            cursor = "0-0"
            for _ in range(max_pages):
                reply = self.client.xautoclaim(
                    stream, GROUP, self.consumer, self.claim_idle_ms, cursor, count=self.batch
                )
                cursor = jobhash.text(reply[0])
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    level = logging.DEBUG if stream == keys.PROGRESS_EVENTS else logging.WARNING
                    log.log(level, "webhook dispatcher: %d pending entries of %s were gone", len(deleted), stream)
                handled += self._handle_all(stream, reply[1])
                if cursor == "0-0":
                    break
        return handled

    def trim(self) -> str | None:
        """Drop the state-change entries the group has acknowledged; returns the id kept from (None: nothing yet).

        Reads the group's last-delivered id first and its oldest pending id after: every entry below both was
        delivered before the first read and is no longer pending, so it was acknowledged. An entry delivered in
        between has a higher id than the first read and stays."""
        groups = self.client.xinfo_groups(keys.EVENTS)
        group = next((g for g in groups if jobhash.text(g["name"]) == GROUP), None)
        if group is None or jobhash.text(group["last-delivered-id"]) == "0-0":
            return None
        keep_from = jobhash.text(group["last-delivered-id"])
        pending = self.client.xpending(keys.EVENTS, GROUP)
        if pending["pending"] and _stream_id(jobhash.text(pending["min"])) < _stream_id(keep_from):
            keep_from = jobhash.text(pending["min"])
        self.client.xtrim(keys.EVENTS, minid=keep_from, approximate=False)
        return keep_from

    def _handle_all(self, stream: str, entries: list[_Entry]) -> int:
        latest: dict[str, str] = {}
        if stream == keys.PROGRESS_EVENTS:
            # Catching up on a backlog, only a job's newest progress matters: the older ones are not sent.
            for entry_id, fields in entries:
                if fields:
                    latest[fields.get(b"job_id", b"").decode()] = entry_id.decode()
        for entry_id, fields in entries:
            if not fields:
                continue  # the entry was trimmed after it was read (Redis 6.2's form): nothing to send
            decoded = {k.decode(): v.decode() for k, v in fields.items()}
            if latest and latest.get(decoded.get("job_id", "")) != entry_id.decode():
                continue
            try:
                self.handle(entry_id.decode(), decoded)
            except (JobNotFoundError, ValueError) as exc:  # the record expired, or an entry this version cannot read
                log.warning("webhook dispatcher: skipping event %s: %s", entry_id, exc)
        if entries:
            self.client.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
        return len(entries)

    def handle(self, entry_id: str, fields: dict[str, str]) -> str | None:
        """Turn one stream entry into a message and enqueue it; returns the message id (None when not sent)."""
        if fields.get("to") == WebhookEventType.BATCH_COMPLETED.value:
            return self._batch_completed(fields)
        kind = _BY_TRANSITION.get(fields.get("to", ""))
        if kind is None:
            return None
        job_id = fields["job_id"]
        stored = self.store.fields(job_id)  # one read: the record and the API key it was submitted with
        record, key_id = jobhash.record(stored), stored.get(JobField.KEY_ID.value)
        url = record.request.webhook_url or self._key_url(key_id)
        if not url or kind not in _wanted(record, from_key=not record.request.webhook_url):
            return None
        if kind is WebhookEventType.JOB_PROGRESS and not self._progress_due(record):
            return None
        msg_id = message_id(job_id, kind, attempt=fields.get("attempt", "0"), entry_id=entry_id)
        at = datetime.fromtimestamp(float(fields["at"]), tz=timezone.utc)
        event = WebhookEvent(id=msg_id, type=kind, timestamp=at, data=record)
        return self._record_and_send(event, job_id, url, key_id)

    def _batch_completed(self, fields: dict[str, str]) -> str | None:
        from ..batches import _batch_record  # lazily: the batches module builds on the job service

        batch_id = fields["batch_id"]
        raw = cast(dict[bytes, bytes], self.client.hgetall(keys.batch(batch_id)))
        batch = {k.decode(): v.decode() for k, v in raw.items()}
        key_id = batch.get("key_id") or None
        url = batch.get("webhook_url") or self._key_url(key_id)
        if not batch or not url:
            return None
        at = datetime.fromtimestamp(float(fields["at"]), tz=timezone.utc)
        data = _batch_record(batch, cost=None).model_dump(mode="json")
        kind = WebhookEventType.BATCH_COMPLETED
        event = WebhookEvent(id=f"msg_{batch_id}_completed", type=kind, timestamp=at, data=data)
        return self._record_and_send(event, batch_id, url, key_id)

    def _record_and_send(self, event: WebhookEvent, subject_id: str, url: str, key_id: str | None) -> str:
        extra = {"key_id": key_id} if key_id else {}
        if self.deliveries.create(event.id, subject_id, event.type, url, event.model_dump_json().encode(), **extra):
            self.send(event.id)
        elif self.deliveries.fields(event.id).get("attempts") == b"0":
            self.send(event.id)  # a dispatcher died between recording and enqueueing: the attempt lock dedupes
        return event.id

    def _key_url(self, key_id: str | None) -> str | None:
        if not key_id:
            return None
        url = self.client.hget(keys.api_key(key_id), "webhook_url")
        return url.decode() if isinstance(url, bytes) else url

    def _progress_due(self, record: JobRecord) -> bool:
        if record.status.is_terminal:
            return False  # a late progress event after the end would only confuse the receiver
        interval_ms = max(1, int(self.progress_interval_s * 1000))
        return bool(self.client.set(keys.progress_sent(record.id), "1", nx=True, px=interval_ms))


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _wanted(record: JobRecord, *, from_key: bool) -> frozenset[WebhookEventType]:
    # An API key's default endpoint gets the default set; a job's own webhook what the job asked for.
    return DEFAULT_WEBHOOK_EVENTS if from_key else record.request.wanted_webhook_events
