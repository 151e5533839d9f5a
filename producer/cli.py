"""`sdq`: the command line. Each command reads its settings once and hands them down."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from .apikeys_cli import app as keys_app
from .cli_errors import CONFIG_EXIT, click_exceptions, explain
from .client import Client
from .client_settings import ClientSettings
from .errors import ConfigurationError
from .jobs import JobRecord, OutputFormat, Scheduler
from .logs import configure_logging
from .models_cli import models
from .settings import ApiSettings

#: Entry-point group through which other packages add `sdq` commands.
PLUGIN_GROUP = "sdqueue.commands"
app = typer.Typer(add_completion=False, no_args_is_help=True, help="sdqueue: text-to-image jobs on (spot) GPUs.")
console = Console(stderr=True)
app.add_typer(keys_app, name="keys")
app.command("models")(models)


@dataclass
class _Run:
    """How this run of `sdq` was asked to report failures (set by the global options)."""

    debug: bool = False


_run = _Run()


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="SDQ_DEBUG", help="On failure, show the traceback (SDQ_DEBUG=1).")
    ] = False,
) -> None:
    """sdqueue: text-to-image jobs on (spot) GPUs."""
    _run.debug = debug


_IMAGE_HELP = "{}: a file (uploaded first), an https:// URL or an upload id."


def _client() -> Client:
    settings = ClientSettings()
    try:
        url = httpx.URL(settings.api_url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"SDQ_API_URL={settings.api_url!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"SDQ_API_URL={settings.api_url!r} is not an http(s) URL: set it to the API's base URL,"
            " e.g. http://127.0.0.1:8000"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(settings.api_url, api_key=key)


def _print(record: JobRecord) -> None:
    sys.stdout.write(record.model_dump_json(indent=2) + "\n")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Overrides SDQ_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SDQ_PORT.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="Server processes; overrides SDQ_API_WORKERS.")
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the HTTP API (with several workers: one process each, sharing the port; SIGTERM stops them all)."""
    import os

    from .api.factory import APP_FACTORY
    from .embedded import EmbeddedRedis
    from .serve import serve

    configure_logging(log_level)
    overrides = {k: v for k, v in {"host": host, "port": port, "api_workers": workers}.items() if v is not None}
    settings = ApiSettings(**overrides)  # type: ignore[arg-type]
    _preflight(settings)
    # Every server process builds its app from the environment (uvicorn's factory): hand the overrides down.
    os.environ.update({"SDQ_HOST": settings.host, "SDQ_PORT": str(settings.port)})
    embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
    if embedded is not None:  # started (or joined) here, so it outlives every worker and is stopped once
        os.environ["SDQ_REDIS_URL"] = embedded.start()
    try:
        serve(  # uvicorn, each server process on its own socket (producer/serve.py)
            APP_FACTORY,
            factory=True,
            workers=settings.resolved_api_workers,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=False,
            # Beyond this many connections (and tasks) per process uvicorn answers 503 itself, before the app.
            limit_concurrency=settings.api_limit_concurrency,
            backlog=settings.api_backlog,
            reuse_port=settings.api_reuse_port,
        )
    finally:
        if embedded is not None:
            embedded.stop()


def _preflight(settings: ApiSettings) -> None:
    """Refuse what would fail in every server process (where uvicorn would print a traceback per process)."""
    from storage import open_store

    from .catalog import load_catalog
    from .cost import PriceTable

    try:
        settings.auth_required  # noqa: B018 - the property checks SDQ_AUTH against SDQ_HOST
    except ValueError as exc:
        raise ConfigurationError(f"{exc}: set SDQ_AUTH=required (and create keys) or listen on 127.0.0.1") from None
    try:
        PriceTable.load(settings.prices, settings.prices_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"SDQ_PRICES_FILE={settings.prices_file}: {exc}; fix or unset it") from None
    load_catalog(settings.model_catalog)  # CatalogError: one line naming the file
    # Builds the storage client without calling it: a malformed URL, an unknown scheme or a missing SDK fails here.
    open_store(settings.resolved_storage_url, credentials=settings.storage_credentials()).close()


@app.command()
def webhooks(log_level: str = "info") -> None:
    """Run the webhook sender: turn job events into signed deliveries, with retries (a CPU process, no GPU)."""
    from .webhooks.settings import WebhookSettings
    from .webhooks.worker import run_webhooks

    configure_logging(log_level)
    raise typer.Exit(run_webhooks(WebhookSettings()))


@app.command(name="webhook-secret")
def webhook_secret() -> None:
    """Print the server's webhook signing secret(s), one a line: give them to your receivers to verify with."""
    from .webhooks.keyring import server_secrets
    from .webhooks.settings import WebhookSettings

    settings = WebhookSettings()
    for secret in server_secrets([s.get_secret_value() for s in settings.webhook_secrets], settings.data_dir):
        sys.stdout.write(secret + "\n")


@app.command()
def controller(
    dry_run: Annotated[
        bool, typer.Option(help="Read and decide, change nothing; print one line per decision on stdout.")
    ] = False,
    ticks: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many ticks (default: run until SIGTERM).")
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the controller: scale on work remaining, requeue dead workers' jobs, sweep stuck jobs, export metrics."""
    from .controller import run_controller
    from .settings import ControllerSettings

    configure_logging(log_level)

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    raise typer.Exit(run_controller(ControllerSettings(), dry_run=dry_run, ticks=ticks, emit=emit if dry_run else None))


@app.command()
def submit(
    prompt: str,
    negative_prompt: str = "",
    model: str | None = None,
    width: Annotated[int | None, typer.Option(help="Default: the model's (`sdq models`).")] = None,
    height: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    steps: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="Default: the model's.")] = None,
    seed: int | None = None,
    num_images: int = 1,
    output_format: OutputFormat = OutputFormat.PNG,
    scheduler: Annotated[Scheduler | None, typer.Option(help="Default: the model's.")] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Send signed job events to this URL.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the job finishes.")] = False,
    out: Annotated[Path | None, typer.Option(help="Download the images here (implies --wait).")] = None,
    image: Annotated[str | None, typer.Option(help=_IMAGE_HELP.format("Start from this image"))] = None,
    strength: Annotated[float | None, typer.Option(help="How much of --image is repainted (0–1).")] = None,
    mask: Annotated[str | None, typer.Option(help=_IMAGE_HELP.format("Inpaint: white is repainted"))] = None,
    controlnet: Annotated[
        list[str] | None,
        typer.Option(help="MODEL:IMAGE, up to 3 times; canny:photo.png computes the edges on the worker."),
    ] = None,
    ip_adapter: Annotated[str | None, typer.Option(help="MODEL:IMAGE: borrow the look of a reference image.")] = None,
    ip_adapter_scale: Annotated[float | None, typer.Option(help="How much of --ip-adapter's look (0–4).")] = None,
) -> None:
    """Submit a job and print its record. Local image files are uploaded straight to storage first."""
    from .client_inputs import controlnet_option, ip_adapter_option

    given: dict[str, Any] = {
        "negative_prompt": negative_prompt or None,
        "model": model,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "num_images": num_images,
        "scheduler": scheduler,
        "output_format": output_format,
        "webhook_url": webhook_url,
    }
    given |= {"image": image, "strength": strength, "mask_image": mask}
    given["controlnets"] = [controlnet_option(spec) for spec in controlnet] if controlnet else None
    given["ip_adapter"] = ip_adapter_option(ip_adapter, ip_adapter_scale) if ip_adapter else None
    # Only the options given: the server fills the rest from the model's catalog defaults.
    fields = {name: value for name, value in given.items() if value is not None}
    with _client() as client:
        record = client.submit(prompt, **fields)
        if wait or out:
            with console.status(f"job {record.id}") as status:
                record = client.wait(record.id, on_update=lambda r: status.update(_describe(r)))
        if out and record.outputs:
            for path in client.download(record, out):
                console.print(f"saved {path}")
        _print(record)
        if record.status.is_terminal and record.status.value != "succeeded":
            raise typer.Exit(1)


def _describe(record: JobRecord) -> str:
    progress = f" step {record.progress.step}/{record.progress.total}" if record.progress else ""
    return f"job {record.id}: {record.status.value}{progress}{_outlook(record)}"


def _outlook(record: JobRecord) -> str:
    """`, 12 ahead, starts in ~30 s, done in ~34 s` (or the reason there is no estimate)."""
    parts = [] if record.queue_position is None else [f"{record.queue_position} ahead"]
    eta = record.eta_s
    if eta is not None and eta.finish is not None:
        if eta.start:
            parts.append(f"starts in ~{eta.start:.0f} s")
        parts.append(f"done in ~{eta.finish:.0f} s")
    elif eta is not None and eta.reason:
        parts.append(eta.reason)
    return "".join(f", {part}" for part in parts)


@app.command()
def status(job_id: str) -> None:
    """Print a job's record (while queued its place in line and ETA: `queue_position`, `eta_s`), then one line."""
    with _client() as client:
        record = client.get(job_id)
    _print(record)
    sys.stderr.write(_describe(record) + "\n")


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    with _client() as client:
        _print(client.cancel(job_id))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the gallery and images go.")] = Path("demo-out"),
    jobs: Annotated[int, typer.Option(min=1, max=32, help="How many prompts to run.")] = 6,
    storage_url: Annotated[
        str | None,
        typer.Option(help="Where images go (s3://, az://, gs://, file:///); overrides SDQ_STORAGE_URL."),
    ] = None,
) -> None:
    """Start Redis, the API and a worker; run a handful of jobs end to end; write a gallery; stop everything."""
    from .demo import run_demo

    raise typer.Exit(run_demo(out, jobs=jobs, storage_url=storage_url))


@app.command()
def up(
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Workers to run (default: one per GPU).")] = None,
    log_level: str = "info",
) -> None:
    """Run a whole local stack: API + dashboard, workers, webhook sender, controller; Ctrl-C stops it all."""
    from .up import run_up

    raise typer.Exit(run_up(workers=workers, log_level=log_level, emit=console.print))


@app.command()
def batch(
    prompts: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="JSON Lines: objects or strings; image files relative to this file."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Images, manifest.jsonl and the resume state go here.")],
    model: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    num_images: int | None = None,
    output_format: OutputFormat | None = None,
    scheduler: Scheduler | None = None,
    poll_interval_s: Annotated[float, typer.Option(min=0.05, help="Seconds between progress checks.")] = 0.5,
) -> None:
    """Run a file of prompts as batches with a live progress bar; download every image; write manifest.jsonl.

    Re-running skips the lines already done and never submits a line twice (safe after a kill)."""
    from .batch_cli import BatchRun, read_lines

    options: dict[str, Any] = {
        "model": model,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "num_images": num_images,
        "output_format": output_format.value if output_format else None,
        "scheduler": scheduler.value if scheduler else None,
    }
    defaults = {k: v for k, v in options.items() if v is not None}
    lines = read_lines(prompts)
    with _client() as client:
        run = BatchRun(
            client, out, defaults, console=console, poll_interval_s=poll_interval_s, files_dir=prompts.parent
        )
        failed = run.run(lines)
    console.print(f"{len(lines) - failed} of {len(lines)} lines done; manifest: {out / 'manifest.jsonl'}")
    if failed:
        console.print(f"[red]{failed} failed[/]: re-run the same command to retry them")
        raise typer.Exit(1)


def _plugins() -> None:
    """Add the commands other packages register (`sdq worker` comes from gpu_worker this way)."""
    for entry in entry_points(group=PLUGIN_GROUP):
        app.command(entry.name)(entry.load())


def main(args: list[str] | None = None) -> None:
    """Entry point of the `sdq` console script: any failure is one line on stderr naming what to fix, and exit
    status 2 (configuration) or 1 (runtime); `--debug` or `SDQ_DEBUG=1` shows the traceback instead."""
    _plugins()
    try:
        code = app(args=args, standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `sdq` or `sdq keys`: the help is the answer
        assert exc.ctx is not None
        sys.stdout.write(exc.ctx.get_help() + "\n")
        sys.exit(CONFIG_EXIT)
    except Exception as exc:
        if _run.debug:
            raise
        failure = explain(exc)
        sys.stderr.write(f"sdq: error: {failure.message}\n")
        sys.exit(failure.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
