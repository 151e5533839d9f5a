"""`sdq keys create | list | revoke`: API keys, managed next to Redis (like `createuser`, not over the API)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .apikeys import KeyStore
from .errors import ProducerError
from .runtime import open_backends
from .settings import CommonSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys: create, list, revoke.")
console = Console(stderr=True)


@app.command()
def create(
    tenant: Annotated[str, typer.Option(help="Tenant the key's jobs belong to (letters, digits, _ . -).")],
    name: Annotated[str, typer.Option(help="A label, e.g. the service that uses the key.")] = "",
    rate_per_s: Annotated[float | None, typer.Option(min=0, help="Requests/s (default SDQ_RATE_LIMIT_PER_S).")] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="Burst (default SDQ_RATE_LIMIT_BURST).")] = None,
    max_queued_jobs: Annotated[
        int | None, typer.Option(min=0, help="Queued jobs allowed (default SDQ_MAX_QUEUED_JOBS).")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Default webhook endpoint for the key's jobs.")] = None,
) -> None:
    """Create a key and print it once, as JSON: the token is not stored and cannot be shown again."""
    with open_backends(CommonSettings()) as backends:
        try:
            key, token = KeyStore(backends.client).create(
                tenant,
                name=name,
                rate_per_s=rate_per_s,
                burst=burst,
                max_queued_jobs=max_queued_jobs,
                webhook_url=webhook_url,
            )
        except ValueError as exc:
            raise ProducerError(str(exc)) from None
    sys.stdout.write(
        json.dumps({"id": key.id, "tenant": key.tenant, "token": token, "webhook_secret": key.webhook_secret}, indent=2)
        + "\n"
    )
    console.print("Store the token now: only its hash is kept. Send it as `Authorization: Bearer <token>`.")


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line instead of a table.")] = False,
) -> None:
    """List every key (never the tokens)."""
    with open_backends(CommonSettings()) as backends:
        found = KeyStore(backends.client).list()
    if as_json:
        for key in found:
            sys.stdout.write(key.model_dump_json(exclude={"webhook_secret"}) + "\n")
        return
    table = Table("id", "tenant", "name", "created", "rate/s", "burst", "max queued", "revoked")
    for key in found:
        table.add_row(
            key.id,
            key.tenant,
            key.name,
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            *("default" if v is None else str(v) for v in (key.rate_per_s, key.burst, key.max_queued_jobs)),
            "yes" if key.revoked else "",
        )
    Console().print(table)


@app.command()
def revoke(key_id: str) -> None:
    """Revoke a key at once (jobs it submitted keep running)."""
    with open_backends(CommonSettings()) as backends:
        if not KeyStore(backends.client).revoke(key_id):
            raise ProducerError(f"no key {key_id!r}")
    console.print(f"revoked {key_id}")
