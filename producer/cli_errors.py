"""What `sdq` says when a command fails: one line that names the setting, URL or file and what to do.

Every command's errors end up here (`producer.cli.main`), so no command formats its own. The exit status tells
scripts which kind of failure it was: 2 for configuration (a setting, an option, a file the user named, a key the
API refuses), 1 for runtime (the API or Redis unreachable, storage failing, a job that failed). `sdq --debug` (or
`SDQ_DEBUG=1`) shows the traceback instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from storage import StorageConfigError, StorageError

from .client_base import ApiError, DownloadError
from .errors import CatalogError, ConfigurationError, ProducerError
from .field_errors import field_path
from .privatefs import UnsafePathError

try:  # typer ≥ 0.24 carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

__all__ = ["CONFIG_EXIT", "RUNTIME_EXIT", "Failure", "click_exceptions", "explain"]

#: A setting, an option or a file is wrong: fix it and run again.
CONFIG_EXIT = 2
#: Something outside the command failed (the API, Redis, storage, a job): retry, or see that service.
RUNTIME_EXIT = 1
#: Settings fields whose value is never echoed back (secrets, or strings that may embed one).
_SECRET_WORDS = ("secret", "key", "token", "password", "connection_string", "credential", "url")
_SETTINGS_FIELD = re.compile(r'field "(\w+)"')
#: What to do when the API refuses a request, by status; the statuses that are the caller's configuration.
_API_HINTS = {
    401: "set SDQ_API_KEY to a live key (`sdq keys create`)",
    403: "this API key's role does not allow it; use a key with the right role (`sdq keys create --role`)",
    413: "send less at once",
    422: "fix the request's options",
    429: "retry after a while",
}
_API_CONFIG_STATUSES = frozenset({401, 403, 413, 422})


@dataclass(frozen=True)
class Failure:
    """The one line to print (without the `error: ` prefix) and the exit status."""

    message: str
    exit_code: int


def explain(exc: BaseException) -> Failure:
    """The line and exit status for `exc`; anything not foreseen is an internal error (exit 1)."""
    for kind, describe in _EXPLAINERS:
        if isinstance(exc, kind):
            return describe(exc)
    return Failure(f"internal error: {type(exc).__name__}: {exc}; rerun with --debug for the traceback", RUNTIME_EXIT)


def _click(exc: click_exceptions.ClickException) -> Failure:
    message = exc.format_message()
    if isinstance(exc, click_exceptions.UsageError) and exc.ctx is not None:
        message += f" (see `{exc.ctx.command_path} --help`)"
    return Failure(message, exc.exit_code)


def _abort(exc: BaseException) -> Failure:
    return Failure("aborted", RUNTIME_EXIT)


def _env_name(part: object) -> str:
    text = str(part)
    return text if text.isupper() else f"SDQ_{text.upper()}"


def _shown(field: str, value: Any) -> str:
    if any(word in field.lower() for word in _SECRET_WORDS) or isinstance(value, (dict, list)):
        return ""
    return f" (got {str(value)[:80]!r})"


def _validation(exc: ValidationError) -> Failure:
    if exc.title.endswith("Settings"):
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a check across fields: its message names them
                problems.append(message)
                continue
            name = _env_name(error["loc"][0])
            problems.append(f"{name}: {message}{_shown(name, error.get('input'))}")
        return Failure("; ".join(problems) + " — fix the setting (environment variable, .env or option)", CONFIG_EXIT)
    problems = [f"{field_path(e, default='request')}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    return Failure(f"invalid {exc.title}: " + "; ".join(problems) + " — fix the option(s)", CONFIG_EXIT)


def _settings(exc: SettingsError) -> Failure:
    found = _SETTINGS_FIELD.search(str(exc))
    name = _env_name(found.group(1)) if found else "a setting"
    return Failure(f"{name} could not be parsed (it must be JSON) — fix the environment variable", CONFIG_EXIT)


def _storage_config(exc: StorageConfigError) -> Failure:
    return Failure(f"storage: {exc} — fix SDQ_STORAGE_URL or the SDQ_STORAGE_* credentials", CONFIG_EXIT)


def _storage(exc: StorageError) -> Failure:
    return Failure(f"storage: {exc}", RUNTIME_EXIT)


def _config(exc: ConfigurationError | CatalogError) -> Failure:
    return Failure(str(exc), CONFIG_EXIT)


def _api(exc: ApiError) -> Failure:
    fields = "".join(f"; {field['field']}: {field['message']}" for field in exc.fields)
    hint = _API_HINTS.get(exc.status, "see the API's log" if exc.status >= 500 else "")
    code = CONFIG_EXIT if exc.status in _API_CONFIG_STATUSES else RUNTIME_EXIT
    advice = f" — {hint}" if hint else ""
    return Failure(f"the API answered {exc.status} {exc.code}: {exc.message}{fields}{advice}", code)


def _download(exc: DownloadError) -> Failure:
    return Failure(f"{exc} — the output URL may have expired: fetch the job again", RUNTIME_EXIT)


def _producer(exc: ProducerError) -> Failure:
    return Failure(str(exc), RUNTIME_EXIT)


def _origin(url: httpx.URL) -> str:
    return str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")


def _bad_url(exc: httpx.UnsupportedProtocol | httpx.InvalidURL) -> Failure:
    return Failure(f"not a usable http(s) URL ({exc}) — check SDQ_API_URL", CONFIG_EXIT)


def _transport(exc: httpx.TransportError) -> Failure:
    try:
        url: httpx.URL | None = exc.request.url
    except RuntimeError:  # raised without its request
        url = None
    reason = str(exc) or type(exc).__name__
    if url is None:
        return Failure(f"could not reach the server ({reason})", RUNTIME_EXIT)
    return Failure(
        f"cannot reach the API at {_origin(url)} ({reason}) — start it (`sdq api`) or point SDQ_API_URL at it",
        RUNTIME_EXIT,
    )


def _redis_auth(exc: redis.AuthenticationError) -> Failure:
    return Failure(f"Redis refused the credentials ({exc}) — fix the user/password in SDQ_REDIS_URL", CONFIG_EXIT)


def _redis(exc: redis.RedisError) -> Failure:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return Failure(f"cannot reach Redis ({exc}) — start it, or fix SDQ_REDIS_URL", RUNTIME_EXIT)
    return Failure(f"Redis: {exc}", RUNTIME_EXIT)


def _path(exc: OSError) -> Failure:
    named = f"{exc.filename}: " if exc.filename else ""
    return Failure(f"{named}{exc.strerror or exc} — check the path", CONFIG_EXIT)


def _unsafe_path(exc: UnsafePathError) -> Failure:
    return Failure(f"{exc} — set SDQ_DATA_DIR to a directory of your own", CONFIG_EXIT)


def _os(exc: OSError) -> Failure:
    named = f"{exc.filename}: " if exc.filename else ""
    return Failure(f"{named}{exc.strerror or exc}", RUNTIME_EXIT)


# First match wins: subclasses before their bases.
_EXPLAINERS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], Failure]], ...] = (
    (click_exceptions.ClickException, _click),
    (typer.Abort, _abort),
    (ValidationError, _validation),
    (SettingsError, _settings),
    (StorageConfigError, _storage_config),
    (StorageError, _storage),
    ((ConfigurationError, CatalogError), _config),
    (ApiError, _api),
    (DownloadError, _download),
    (ProducerError, _producer),
    ((httpx.UnsupportedProtocol, httpx.InvalidURL), _bad_url),
    (httpx.TransportError, _transport),
    (redis.AuthenticationError, _redis_auth),
    (redis.RedisError, _redis),
    (UnsafePathError, _unsafe_path),
    ((FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError), _path),
    (OSError, _os),
)
