"""`sdq demo`: the whole flow on one machine, with real processes and no cloud, GPU or network.

Embedded Redis → `sdq api` → SDK over HTTP → Redis/Dramatiq → `sdq worker` (the built-in `tiny` model) → local
storage → signed download URLs → an `index.html` gallery and a timing table.
"""

from __future__ import annotations

import html
import os
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from .client import Client
from .embedded import EmbeddedRedis
from .jobs import JobRecord, JobRequest, OutputFormat
from .localstack import LocalStack, StackError
from .settings import ApiSettings, CommonSettings
from .webhooks.inbox import Inbox
from .webhooks.signing import new_secret

console = Console(width=max(100, Console().width))

#: Small images and few steps: the demo runs on a 2-core CPU in well under two minutes.
DEFAULTS: dict[str, object] = {"width": 128, "height": 128, "steps": 20}
PROMPTS: list[tuple[str, dict[str, object]]] = [
    ("a lighthouse on a cliff at dusk, oil painting", {}),
    ("a red fox in fresh snow, telephoto photograph", {"width": 192, "height": 128}),
    ("isometric pixel-art village with a windmill", {"num_images": 2}),
    ("macro shot of a dew drop on a leaf", {"output_format": OutputFormat.JPEG}),
    ("a neon-lit street in the rain, cinematic", {"width": 128, "height": 192}),
    ("a bowl of ramen, studio lighting", {"output_format": OutputFormat.WEBP}),
]


def run_demo(out: Path, *, jobs: int = 6, storage_url: str | None = None) -> int:
    """Run the demo; returns the process exit status (0 when every job succeeded).

    `storage_url` (else `SDQ_STORAGE_URL`, else local files) is where the worker puts the images.
    """
    try:
        return _run(out, jobs, storage_url)
    except DemoError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        return 1


class DemoError(Exception):
    """A part of the demo stack did not come up; the message says where to look."""


def _run(out: Path, jobs: int, storage_url: str | None) -> int:
    settings = CommonSettings()
    out.mkdir(parents=True, exist_ok=True)
    # Every job reports to a local, verifying receiver: loopback is allow-listed for the demo's processes only.
    secret = new_secret()
    env = {
        **os.environ,
        "SDQ_DATA_DIR": str(settings.data_dir.resolve()),
        "HF_HUB_OFFLINE": "1",
        "SDQ_WEBHOOK_SECRETS": secret,
        "SDQ_WEBHOOK_ALLOW": "127.0.0.1/32",
    }
    if storage_url:
        env["SDQ_STORAGE_URL"] = storage_url
    started = time.monotonic()
    with ExitStack() as stack:
        inbox = stack.enter_context(Inbox([secret]))
        if settings.redis_url is None:  # started here so that this process, which outlives the others, owns it
            embedded = stack.enter_context(EmbeddedRedis(settings.data_dir))
            console.print(f"embedded Redis at [bold]{embedded.url}[/]")
        local = LocalStack(env, out / "logs")
        try:
            local.start(workers=1)
        except StackError as exc:
            raise DemoError(str(exc)) from exc
        stack.callback(local.stop)
        console.print(f"API at [bold]{local.api_url}[/]; one worker; webhooks to {inbox.url} (logs in {out / 'logs'})")
        console.print(f"dashboard (while the demo runs): [bold]{local.api_url}/ui/[/]")
        storage = env.get("SDQ_STORAGE_URL") or settings.resolved_storage_url
        console.print(f"images go to [bold]{storage.split('?', 1)[0]}[/]")
        with Client(local.api_url) as client:
            hook = {"webhook_url": inbox.url}
            requests = [JobRequest(**{**DEFAULTS, **hook, "prompt": p, **kw}) for p, kw in _prompts(jobs)]  # type: ignore[arg-type]
            submitted = [client.submit(request) for request in requests]
            records = _follow(client, submitted)
            files = {r.id: client.download(r, out) for r in records if r.status.value == "succeeded"}
            # Image inputs: the first picture, repainted (image-to-image) and with a disc inpainted, uploaded by the
            # SDK straight to storage like any local file.
            inputs: dict[str, list[Path]] = {}
            first = next((files[r.id][0] for r in records if files.get(r.id)), None)
            if first is not None:
                image_dir = out / "image-jobs"  # beside the text jobs' pictures, not among them
                image_dir.mkdir(exist_ok=True)
                image_jobs = _image_jobs(client, first, image_dir, hook)
                inputs = {job.id: paths for job, paths in image_jobs}
                more = _follow(client, [job for job, _ in image_jobs])
                files.update({r.id: client.download(r, image_dir) for r in more if r.status.value == "succeeded"})
                records += more
        _webhooks(inbox, records)
    _gallery(out, records, files, dashboard=f"{ApiSettings().resolved_public_url}/ui/#/gallery", inputs=inputs)
    _table(records, time.monotonic() - started)
    failed = [r for r in records if r.status.value != "succeeded"]
    for record in failed:
        console.print(f"[red]job {record.id} {record.status.value}[/]: {record.error}")
    console.print(f"gallery: [bold]{(out / 'index.html').resolve()}[/]")
    console.print("the jobs stay in the data dir: [bold]sdq up[/] serves them in the dashboard (its gallery page)")
    return 1 if failed else 0


def _webhooks(inbox: Inbox, records: list[JobRecord]) -> None:
    """Wait briefly for every job's terminal event, then say what arrived (a late webhook never fails the demo)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ended = {e.data.id for e in inbox.received() if e.type.is_terminal and isinstance(e.data, JobRecord)}
        if ended >= {r.id for r in records}:
            break
        time.sleep(0.1)
    events = inbox.received()
    kinds = ", ".join(f"{sum(e.type is k for e in events)} {k.value}" for k in dict.fromkeys(e.type for e in events))
    console.print(f"webhooks: {len(events)} signed events verified ({kinds}); {inbox.rejected} rejected")


def _prompts(count: int) -> list[tuple[str, dict[str, object]]]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(count)]


def _follow(client: Client, submitted: list[JobRecord]) -> list[JobRecord]:
    records = {r.id: r for r in submitted}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}")) as bar:
        tasks = {r.id: bar.add_task(r.request.prompt[:40], total=r.request.steps, state="queued") for r in submitted}
        deadline = time.monotonic() + 600
        while not all(r.status.is_terminal for r in records.values()) and time.monotonic() < deadline:
            for job_id, record in list(records.items()):
                if record.status.is_terminal:
                    continue
                record = records[job_id] = client.get(job_id)
                if record.progress:  # the scheduler's real step count may differ from the request's
                    bar.update(tasks[job_id], total=record.progress.total, completed=record.progress.step)
                bar.update(tasks[job_id], state=record.status.value)
            time.sleep(0.2)
    return [client.get(job_id) for job_id in records]


def _image_jobs(client: Client, source: Path, out: Path, hook: dict[str, str]) -> list[tuple[JobRecord, list[Path]]]:
    """An image-to-image and an inpainting job on `source`, each with the input files it names."""
    from PIL import Image, ImageDraw

    with Image.open(source) as picture:
        size = picture.size
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=255)  # white: repainted
    mask_path = out / "mask.png"
    mask.save(mask_path)
    common = {**DEFAULTS, **hook, "width": w, "height": h, "seed": 7}
    repaint = client.submit("the same scene in watercolour", image=source, strength=0.6, **common)
    inpaint = client.submit("a full moon", image=source, mask_image=mask_path, **common)
    return [(repaint, [source]), (inpaint, [source, mask_path])]


def _gallery(
    out: Path,
    records: list[JobRecord],
    files: dict[str, list[Path]],
    *,
    dashboard: str,
    inputs: dict[str, list[Path]] | None = None,
) -> None:
    figures = []
    for record in records:
        given = (inputs or {}).get(record.id, [])
        for path, output in zip(files.get(record.id, []), record.outputs, strict=False):
            mode = " (inpainted)" if record.request.mask_image else " (image-to-image)" if given else ""
            caption = html.escape(f"{record.request.prompt}{mode} — seed {output.seed}, {output.width}×{output.height}")
            shown = "".join(f'<img src="{_href(out, p)}" alt="input" class="input">' for p in given)
            figures.append(
                f'<figure>{shown}<img src="{_href(out, path)}" alt=""><figcaption>{caption}</figcaption></figure>'
            )
    page = (
        "<!doctype html><meta charset=utf-8><title>sdqueue demo</title>"
        "<style>body{font-family:sans-serif;display:flex;flex-wrap:wrap;gap:1em}"
        "figure{width:256px;margin:0}img{width:256px;image-rendering:pixelated}"
        "img.input{width:124px;opacity:.8;margin-right:4px}</style>"
        "<h1 style='width:100%'>sdqueue demo</h1>"
        f"<p style='width:100%'>Run <code>sdq up</code> and open <a href=\"{html.escape(dashboard)}\">the dashboard's"
        " gallery</a> for these jobs and every later one.</p>" + "".join(figures)
    )
    (out / "index.html").write_text(page, encoding="utf-8")


def _href(out: Path, path: Path) -> str:
    """`path` as the gallery page in `out` links it."""
    return html.escape(Path(os.path.relpath(path, out)).as_posix())


def _table(records: list[JobRecord], wall_s: float) -> None:
    table = Table(title=f"{len(records)} jobs in {wall_s:.1f} s, start-up included (times in seconds)")
    for column in ("job", "size", "n", "status", "wait", "load", "infer", "encode", "upload"):
        table.add_column(column, justify="right" if column not in ("job", "status") else "left", no_wrap=True)

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    for r in records:
        t = r.timings
        table.add_row(
            r.id[:8],
            f"{r.request.width}×{r.request.height}",
            str(r.request.num_images),
            r.status.value,
            seconds(t.queue_wait_s),
            seconds(t.load_s),
            seconds(t.inference_s),
            seconds(t.encode_s),
            seconds(t.upload_s),
        )
    console.print(table)
