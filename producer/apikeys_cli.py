"""`sdq keys create | list | revoke | rotate`: API keys, managed next to Redis (like `createuser`, not over the API)."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .apikeys import KeyStore, Role
from .errors import ConfigurationError, ProducerError
from .key_rotation import KeyRotation, UnknownKeyError
from .runtime import open_backends
from .settings import CommonSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys: create, list, revoke, rotate.")
console = Console(stderr=True)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m`, `24h` or `7d`; raises `ConfigurationError` for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(f"--overlap {text!r}: give a duration like 90s, 30m, 24h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _print_json(value: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


@app.command()
def create(
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Tenant the key's jobs belong to (letters, digits, _ . -); default the role for admin and"
            " scaling keys."
        ),
    ] = None,
    role: Annotated[
        Role, typer.Option(help="tenant: its own jobs; admin: plus fleet-wide views; scaling: GET /v1/scaling only.")
    ] = Role.TENANT,
    name: Annotated[str, typer.Option(help="A label, e.g. the service that uses the key.")] = "",
    rate_per_s: Annotated[float | None, typer.Option(min=0, help="Requests/s (default SDQ_RATE_LIMIT_PER_S).")] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="Burst (default SDQ_RATE_LIMIT_BURST).")] = None,
    max_queued_jobs: Annotated[
        int | None, typer.Option(min=0, help="Queued jobs allowed (default SDQ_MAX_QUEUED_JOBS).")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Default webhook endpoint for the key's jobs.")] = None,
) -> None:
    """Create a key and print it once, as JSON: the token is not stored and cannot be shown again.

    `inbound_secret` verifies jobs pushed to /v1/hooks/jobs; `outbound_secret` signs the key's webhooks (give it
    to your receivers, never the inbound one)."""
    if tenant is None:
        if role is Role.TENANT:
            raise ConfigurationError("sdq keys create needs --tenant for a tenant key (or pass --role admin|scaling)")
        tenant = role.value
    with open_backends(CommonSettings()) as backends:
        try:
            key, token = KeyStore(backends.client).create(
                tenant,
                name=name,
                role=role,
                rate_per_s=rate_per_s,
                burst=burst,
                max_queued_jobs=max_queued_jobs,
                webhook_url=webhook_url,
            )
        except ValueError as exc:
            raise ConfigurationError(f"--tenant {tenant!r}: {exc}") from None
    _print_json(
        {
            "id": key.id,
            "tenant": key.tenant,
            "role": key.role.value,
            "token": token,
            "inbound_secret": key.inbound_secret,
            "outbound_secret": key.outbound_secret,
        }
    )
    console.print("Store the token now: only its hash is kept. Send it as `Authorization: Bearer <token>`.")


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line instead of a table.")] = False,
) -> None:
    """List every key (never the tokens or secrets)."""
    with open_backends(CommonSettings()) as backends:
        found = KeyStore(backends.client).list()
    if as_json:
        for key in found:
            sys.stdout.write(key.model_dump_json(exclude={"inbound_secrets", "outbound_secrets"}) + "\n")
        return
    table = Table("id", "tenant", "role", "name", "created", "rate/s", "burst", "max queued", "revoked")
    for key in found:
        table.add_row(
            key.id,
            key.tenant,
            key.role.value,
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


@app.command()
def rotate(
    key_id: str,
    inbound: Annotated[bool, typer.Option("--inbound", help="A new secret for /v1/hooks/jobs signatures.")] = False,
    outbound: Annotated[bool, typer.Option("--outbound", help="A new secret signing the key's webhooks.")] = False,
    token: Annotated[bool, typer.Option("--token", help="A new API token.")] = False,
    overlap: Annotated[
        str, typer.Option(help="How long the old value keeps working (90s, 30m, 24h, 7d; 0 = stop at once).")
    ] = "24h",
) -> None:
    """Give a key a new token and/or webhook secrets, printed once as JSON; the old ones keep working for
    `--overlap` so clients and receivers can switch without a failed request (outbound webhooks are signed with
    both while the overlap lasts)."""
    if not (inbound or outbound or token):
        raise ConfigurationError("sdq keys rotate: name what to rotate: --inbound, --outbound and/or --token")
    overlap_s = parse_duration(overlap)
    shown: dict[str, object] = {"id": key_id}
    with open_backends(CommonSettings()) as backends:
        rotation = KeyRotation(backends.client)
        try:
            done = []
            if token:
                done.append(("token", rotation.token(key_id, overlap_s=overlap_s)))
            if inbound:
                done.append(("inbound_secret", rotation.secret(key_id, "inbound", overlap_s=overlap_s)))
            if outbound:
                done.append(("outbound_secret", rotation.secret(key_id, "outbound", overlap_s=overlap_s)))
        except UnknownKeyError as exc:
            raise ProducerError(f"{exc}; see `sdq keys list`") from None
    for field, rotated in done:
        shown[field] = rotated.value
        until = datetime.fromtimestamp(rotated.old_valid_until, tz=timezone.utc)
        shown["old_valid_until"] = until.isoformat(timespec="seconds")
    _print_json(shown)
    console.print("Store the new values now: they are shown this once.")
