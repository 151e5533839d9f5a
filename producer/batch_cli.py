"""`sdq batch prompts.jsonl --out DIR`: run a file of prompts as batches, download every image, write a manifest.

Resumable and duplicate-free, whatever kills it:
* Each line gets a stable key (its content plus which repeat of that content it is), so editing other lines does
  not change it. `manifest.jsonl` holds the lines that are done; a re-run skips them.
* Submissions carry an `Idempotency-Key` derived from the keys they hold, and the job id of every submitted line
  is saved (`.sdq-batch/state.json`) right after: a run killed before or after saving re-submits the same
  request and gets the same batch back, so no job is ever created twice.
* Images are written under names derived from the line key (atomically), then the line goes to the manifest in
  one append: a kill in between re-downloads over the same files.
* Lines may name input images as files relative to the prompts file (`{"prompt": …, "image": "photos/a.png"}`):
  each distinct file is uploaded once and its upload id saved with the state, so a re-run sends the same request;
  a file is uploaded again once its id is about to stop serving new jobs (`usable_until`, SDQ_UPLOAD_TTL_S).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .client import Client
from .client_base import fetched, storage_client_options, storage_errors
from .client_inputs import digest, find_local, with_references
from .errors import BatchNotFoundError, ConfigurationError, ProducerError
from .jobs import MAX_BATCH_ITEMS, ImageRef, JobRecord, JobStatus

MANIFEST = "manifest.jsonl"
STATE_DIR = ".sdq-batch"
_DOWNLOAD_THREADS = 8
#: How often the progress bar asks the server when the batches should finish (`GET /v1/batches/{id}`: eta_s).
_ETA_INTERVAL_S = 5.0
#: An upload id with less time than this left to serve new jobs is not reused: the file is uploaded again.
_UPLOAD_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class Line:
    """One prompt of the input file."""

    number: int
    key: str
    item: dict[str, Any]


@dataclass
class State:
    """What earlier runs submitted: batch ids and the job id of every submitted line key."""

    path: Path
    batches: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    #: Upload id of every input image file sent and until when it serves new jobs (`{"id", "usable_until"}`), by
    #: the SHA-256 of its bytes.
    uploads: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        # An upload saved as a bare id (before `usable_until` was kept) has no known end: it is uploaded again.
        uploads = {key: value for key, value in data.get("uploads", {}).items() if isinstance(value, dict)}
        return cls(path, list(data.get("batches", [])), dict(data.get("jobs", {})), uploads)

    def upload_id(self, key: str) -> str | None:
        """The saved upload of the file whose bytes hash to `key`, if it serves new jobs a while longer."""
        saved = self.uploads.get(key)
        if saved is None:
            return None
        if datetime.fromisoformat(saved["usable_until"]) - _UPLOAD_MARGIN < datetime.now(timezone.utc):
            return None
        return saved["id"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"batches": self.batches, "jobs": self.jobs, "uploads": self.uploads}))
        os.replace(tmp, self.path)


def read_lines(path: Path) -> list[Line]:
    """The prompts of a JSON Lines file: objects with JobRequest fields, or bare JSON strings (the prompt)."""
    lines, seen = [], Counter[str]()
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}:{number}: not valid JSON ({exc.msg}); fix that line") from None
        item = {"prompt": value} if isinstance(value, str) else value
        if not isinstance(item, dict):
            raise ConfigurationError(f"{path}:{number}: expected a JSON object or string; fix that line")
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"))
        seen[canonical] += 1
        key = hashlib.sha256(f"{canonical}\0{seen[canonical]}".encode()).hexdigest()[:24]
        lines.append(Line(number, key, item))
    return lines


def read_manifest(path: Path) -> set[str]:
    """Keys of the lines already done. A torn last line (a kill mid-append) is dropped from the file."""
    if not path.exists():
        return set()
    done, good = set(), []
    for text in path.read_text().splitlines():
        try:
            done.add(json.loads(text)["key"])
            good.append(text)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    if len(good) != len(path.read_text().splitlines()):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(g + "\n" for g in good))
        os.replace(tmp, path)
    return done


class BatchRun:
    """One run of `sdq batch`: submit what is not yet submitted, follow the batches, download, record."""

    def __init__(
        self,
        client: Client,
        out: Path,
        defaults: Mapping[str, Any],
        *,
        console: Console,
        poll_interval_s: float = 0.5,
        files_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.out = out
        #: What image file names in lines are relative to (the prompts file's directory).
        self.files_dir = files_dir
        self.defaults = dict(defaults)
        self.console = console
        self.poll_interval_s = poll_interval_s
        self.state = State.load(out / STATE_DIR / "state.json")
        self.manifest = out / MANIFEST
        self.failed: dict[str, str] = {}
        # Presigned URLs go through a plain client of their own, never the API's (which carries its key).
        self.files = httpx.Client(**storage_client_options(httpx.Timeout(60.0)))

    def run(self, lines: list[Line]) -> int:
        """Run to the end; returns how many lines failed (0 = every image is in `out`)."""
        with self.files:
            return self._run(lines)

    def _run(self, lines: list[Line]) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        done = read_manifest(self.manifest)
        pending = {line.key: line for line in lines if line.key not in done}
        self._submit([line for line in pending.values() if line.key not in self.state.jobs])
        by_job = {self.state.jobs[key]: pending[key] for key in pending if key in self.state.jobs}
        lines_by_job = dict(by_job)
        columns = (
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[eta]}"),
        )
        with Progress(*columns, console=self.console) as bar, ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
            task = bar.add_task("batch", total=len(lines), completed=len(lines) - len(pending), failed=0, eta="")
            offsets = dict.fromkeys(self.state.batches, 0)
            looked = -float("inf")
            while by_job and offsets:
                if time.monotonic() - looked >= _ETA_INTERVAL_S:  # the server's estimate, from the fleet's pace
                    looked = time.monotonic()
                    bar.update(task, eta=self._server_eta(offsets))
                finished = list(self._finished(offsets, by_job))
                for record in finished:
                    by_job.pop(record.id)
                for _ in pool.map(lambda r: self._save(r, lines_by_job[r.id]), finished):
                    bar.update(task, advance=1, failed=len(self.failed))
                if by_job and not finished:
                    time.sleep(self.poll_interval_s)
        for line in by_job.values():  # their batches expired on the server
            self.failed[line.key] = "expired"
        for key in self.failed:
            self.state.jobs.pop(key, None)  # a failed line is submitted again by the next run
        self.state.save()
        return len(self.failed)

    def _submit(self, lines: list[Line]) -> None:
        for start in range(0, len(lines), MAX_BATCH_ITEMS):
            chunk = lines[start : start + MAX_BATCH_ITEMS]
            # The batches submitted before are part of the key: a run killed before saving sends the same key again
            # (and gets its batch back), while lines that failed in a saved batch are submitted anew, not replayed.
            keys = [self.defaults, [line.key for line in chunk], self.state.batches]
            digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()
            items = [self._with_uploads(line) for line in chunk]
            created = self.client.submit_batch(
                items,
                defaults=self.defaults,
                metadata={"source": "sdq batch"},
                idempotency_key=f"sdq-batch-{digest[:40]}",
            )
            if created.id not in self.state.batches:
                self.state.batches.append(created.id)
            self.state.jobs.update({line.key: job_id for line, job_id in zip(chunk, created.job_ids, strict=True)})
            self.state.save()

    def _with_uploads(self, line: Line) -> dict[str, Any]:
        """The line's item with each image file replaced by its upload (made once per distinct file, ever)."""
        try:
            found = find_local(line.item, base=self.files_dir)
        except ProducerError as exc:
            raise ProducerError(f"line {line.number}: {exc}") from None
        refs = {}
        for path, image in found.items():
            key = digest(image)
            upload_id = self.state.upload_id(key)
            if upload_id is None:
                created = self.client.upload(image.data)
                upload_id = created.id
                self.state.uploads[key] = {"id": upload_id, "usable_until": created.usable_until.isoformat()}
                self.state.save()
            refs[path] = ImageRef(upload=upload_id)
        return with_references(line.item, refs) if found else line.item

    def _server_eta(self, offsets: Mapping[str, int]) -> str:
        """When the server expects the last of these batches to finish (or why it cannot say yet)."""
        finish, reason = 0.0, ""
        for batch_id in offsets:
            try:
                eta = self.client.get_batch(batch_id).eta_s
            except BatchNotFoundError:
                continue
            if eta is not None and eta.finish is not None:
                finish = max(finish, eta.finish)
            elif eta is not None and eta.reason:
                reason = eta.reason
        if reason:
            return f"[dim]{reason}"
        return f"server ETA {_duration(finish)}" if finish else ""

    def _finished(self, offsets: dict[str, int], by_job: Mapping[str, Line]) -> Iterator[JobRecord]:
        for batch_id in list(offsets):
            try:
                page = self.client.batch_jobs(batch_id, offset=offsets[batch_id], limit=500)
            except BatchNotFoundError:  # expired: its unfinished lines are submitted again next run
                del offsets[batch_id]
                continue
            offsets[batch_id] = page.next_offset
            yield from (job for job in page.jobs if job.id in by_job)

    def _save(self, record: JobRecord, line: Line) -> Line | None:
        """Download the job's images and append its manifest lines; None when the job did not succeed."""
        if record.status is not JobStatus.SUCCEEDED:
            self.failed[line.key] = record.status.value
            return None
        rows = []
        cost = getattr(record, "cost", None)
        for index, output in enumerate(record.outputs):
            if output.url is None:
                raise ProducerError(f"job {record.id}: output {output.key} has no download URL")
            name = f"{line.number:06d}-{line.key[:12]}-{index}.{output.key.rsplit('.', 1)[-1]}"
            with storage_errors(output.url):
                response = self.files.get(output.url)
            fetched(response, output.url, self.out / name)
            rows.append(
                {
                    "key": line.key,
                    "line": line.number,
                    "image": index,
                    "job_id": record.id,
                    "prompt": record.request.prompt,
                    "seed": output.seed,
                    "file": name,
                    "timings": record.timings.model_dump(mode="json"),
                    "cost_usd": getattr(cost, "total_usd", None),
                }
            )
        with self.manifest.open("a") as handle:  # one write: the item is done, or not at all
            handle.write("".join(json.dumps(row) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
        return line


def _duration(seconds: float) -> str:
    """`1h02m`, `3m05s`, `42s`."""
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"
