"""`sdq`: the command line. Each command reads its settings once and hands them down."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .client import ApiError, Client
from .errors import JobNotFoundError, ProducerError
from .jobs import JobRecord, OutputFormat, Scheduler
from .settings import ApiSettings, ClientSettings

#: Entry-point group through which other packages add `sdq` commands.
PLUGIN_GROUP = "sdqueue.commands"
app = typer.Typer(add_completion=False, no_args_is_help=True, help="sdqueue: text-to-image jobs on (spot) GPUs.")
console = Console(stderr=True)


def configure_logging(level: str) -> None:
    """The log format every `sdq` process uses."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _client() -> Client:
    settings = ClientSettings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(settings.api_url, api_key=key)


def _print(record: JobRecord) -> None:
    sys.stdout.write(record.model_dump_json(indent=2) + "\n")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Overrides SDQ_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SDQ_PORT.")] = None,
    log_level: str = "info",
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from storage import LinkSigner, open_store

    from .api import create_app
    from .runtime import open_backends, signing_secret
    from .service import JobService

    configure_logging(log_level)
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = ApiSettings(**overrides)  # type: ignore[arg-type]
    with open_backends(settings) as backends:
        signer = LinkSigner(signing_secret(settings), settings.resolved_public_url)
        objects = open_store(settings.resolved_storage_url, signer=signer)
        service = JobService(
            backends.store,
            backends.broker,
            queue=settings.queue,
            default_model=settings.default_model,
            allowed_models=frozenset(settings.allowed_models),
        )
        application = create_app(service, objects, url_expiry=timedelta(seconds=settings.url_expiry_s))
        uvicorn.run(application, host=settings.host, port=settings.port, log_level=log_level, access_log=False)


@app.command()
def submit(
    prompt: str,
    negative_prompt: str = "",
    model: str | None = None,
    width: int = 512,
    height: int = 512,
    steps: int = 30,
    guidance_scale: float = 7.5,
    seed: int | None = None,
    num_images: int = 1,
    output_format: OutputFormat = OutputFormat.PNG,
    scheduler: Scheduler = Scheduler.DEFAULT,
    wait: Annotated[bool, typer.Option(help="Wait until the job finishes.")] = False,
    out: Annotated[Path | None, typer.Option(help="Download the images here (implies --wait).")] = None,
) -> None:
    """Submit a job and print its record."""
    from pydantic import ValidationError

    fields = {
        "negative_prompt": negative_prompt,
        "model": model,
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "num_images": num_images,
        "scheduler": scheduler,
        "output_format": output_format,
    }
    with _client() as client:
        try:
            record = client.submit(prompt, **fields)
        except ValidationError as exc:
            for error in exc.errors():
                console.print(f"[red]{'.'.join(map(str, error['loc'])) or 'request'}[/]: {error['msg']}")
            raise typer.Exit(2) from None
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
    return f"job {record.id}: {record.status.value}{progress}"


@app.command()
def status(job_id: str) -> None:
    """Print a job's record."""
    with _client() as client:
        _print(client.get(job_id))


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    with _client() as client:
        _print(client.cancel(job_id))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the gallery and images go.")] = Path("demo-out"),
    jobs: Annotated[int, typer.Option(min=1, max=32, help="How many prompts to run.")] = 6,
) -> None:
    """Start Redis, the API and a worker; run a handful of jobs end to end; write a gallery; stop everything."""
    from .demo import run_demo

    raise typer.Exit(run_demo(out, jobs=jobs))


def _plugins() -> None:
    """Add the commands other packages register (`sdq worker` comes from gpu_worker this way)."""
    for entry in entry_points(group=PLUGIN_GROUP):
        app.command(entry.name)(entry.load())


def main() -> None:
    """Entry point of the `sdq` console script; errors become one readable line, never a traceback."""
    _plugins()
    try:
        app()
    except JobNotFoundError as exc:
        console.print(f"[red]not found[/]: {exc}")
        sys.exit(1)
    except ApiError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.message}")
        for field in exc.fields:
            console.print(f"  {field['field']}: {field['message']}")
        sys.exit(1)
    except ProducerError as exc:
        console.print(f"[red]error[/]: {exc}")
        sys.exit(1)
    except OSError as exc:
        console.print(f"[red]error[/]: {exc}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
