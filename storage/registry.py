"""Open a store from its URL: a plain dict of scheme → factory, each importing its backend only when used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, get_args, runtime_checkable
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from storage.base import Lister, ObjectStore, Presigner
from storage.credentials import StorageCredentials
from storage.errors import StorageConfigError
from storage.signing import LinkSigner

_NO_CREDENTIALS = StorageCredentials()
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


@runtime_checkable
class PresigningStore(ObjectStore, Presigner, Protocol):
    """An `ObjectStore` that can also presign GET URLs: what `open_store` returns."""


@runtime_checkable
class FullStore(PresigningStore, Lister, Protocol):
    """A `PresigningStore` that also lists and streams objects: every backend `open_store` builds is one."""

    def close(self) -> None:
        """Release pooled connections; the store must not be used afterwards."""
        ...


Factory = Callable[[SplitResult, LinkSigner | None, StorageCredentials], FullStore]


def _open_file(url: SplitResult, signer: LinkSigner | None, credentials: StorageCredentials) -> FullStore:
    from storage.local import LocalStore

    if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
        raise StorageConfigError(f"file store URLs must be absolute, like file:///srv/sdqueue; got {url.geturl()!r}")
    if url.query or url.fragment:
        raise StorageConfigError(f"file store URLs take no query or fragment; got {url.geturl()!r}")
    return LocalStore(Path(unquote(url.path)), signer=signer)


def _open_s3(url: SplitResult, signer: LinkSigner | None, credentials: StorageCredentials) -> FullStore:
    # S3 presigns with SigV4 itself, so `signer` is not needed here.
    from storage.s3 import AddressingStyle, S3Store

    options = _single_values(url, allowed=("endpoint_url", "region", "addressing_style"))
    style = options.pop("addressing_style", "auto")
    if style not in get_args(AddressingStyle):
        raise StorageConfigError(f"addressing_style must be one of auto, path, virtual; got {style!r}")
    return S3Store(
        url.netloc,
        unquote(url.path),
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region"),
        addressing_style=style,  # type: ignore[arg-type]  # checked against AddressingStyle above
        access_key_id=credentials.aws_access_key_id,
        secret_access_key=credentials.aws_secret_access_key,
        session_token=credentials.aws_session_token,
    )


def _open_azure(url: SplitResult, signer: LinkSigner | None, credentials: StorageCredentials) -> FullStore:
    from storage.azure import AzureBlobStore

    options = _single_values(url, allowed=("endpoint_url",))
    container, _, prefix = unquote(url.path).lstrip("/").partition("/")
    if not container:
        raise StorageConfigError(f"Azure URLs look like az://account/container/prefix; got {url.geturl()!r}")
    return AzureBlobStore(
        url.netloc,
        container,
        prefix,
        endpoint_url=options.get("endpoint_url"),
        connection_string=credentials.azure_connection_string,
        account_key=credentials.azure_account_key,
    )


def _open_gcs(url: SplitResult, signer: LinkSigner | None, credentials: StorageCredentials) -> FullStore:
    from storage.gcs import GcsStore

    options = _single_values(url, allowed=("endpoint_url", "project", "anonymous"))
    anonymous = options.get("anonymous", "").lower()
    if anonymous not in _TRUE + _FALSE:
        raise StorageConfigError(f"anonymous must be true or false; got {anonymous!r}")
    return GcsStore(
        url.netloc,
        unquote(url.path),
        endpoint_url=options.get("endpoint_url"),
        project=options.get("project"),
        anonymous=anonymous in _TRUE,
        service_account_info=credentials.gcs_service_account_info(),
    )


#: Scheme → factory; each imports its backend (and SDK) only when called.
FACTORIES: dict[str, Factory] = {
    "az": _open_azure,
    "file": _open_file,
    "gs": _open_gcs,
    "s3": _open_s3,
}


def open_store(
    url: str, *, signer: LinkSigner | None = None, credentials: StorageCredentials | None = None
) -> FullStore:
    """The store `url` names. Schemes and their options:

    - `file:///abs/path`
    - `s3://bucket/prefix?endpoint_url=...&region=...&addressing_style=auto|path|virtual`
    - `az://account/container/prefix?endpoint_url=...` (the blob service URL, e.g. Azurite's)
    - `gs://bucket/prefix?endpoint_url=...&project=...&anonymous=false`

    `signer` lets a local store presign links to the API's file route; backends that presign natively ignore it.
    `credentials` holds explicit secrets; what it leaves unset comes from each SDK's standard chain.
    Raises `StorageConfigError` for a malformed URL, an unknown scheme, or a backend whose SDK is missing.
    """
    parts = urlsplit(url)
    factory = FACTORIES.get(parts.scheme.lower())
    if factory is None:
        supported = ", ".join(f"{scheme}://" for scheme in sorted(FACTORIES))
        raise StorageConfigError(f"unsupported storage URL {url!r}; supported schemes: {supported}")
    return factory(parts, signer, credentials or _NO_CREDENTIALS)


def _single_values(url: SplitResult, *, allowed: tuple[str, ...]) -> dict[str, str]:
    if url.fragment:
        raise StorageConfigError(f"storage URLs take no fragment; got {url.geturl()!r}")
    try:
        query = parse_qs(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError as exc:
        raise StorageConfigError(f"malformed query in storage URL {url.geturl()!r}: {exc}") from None
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise StorageConfigError(
            f"unknown option(s) {', '.join(unknown)} in {url.geturl()!r}; allowed: {', '.join(allowed)}"
        )
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise StorageConfigError(f"option(s) {', '.join(repeated)} given more than once in {url.geturl()!r}")
    return {name: values[0] for name, values in query.items()}
