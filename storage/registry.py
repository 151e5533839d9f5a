"""Open a store from its URL: a plain dict of scheme → factory, each importing its backend only when used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, get_args, runtime_checkable
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from storage.base import ObjectStore, Presigner
from storage.errors import StorageConfigError
from storage.signing import LinkSigner


@runtime_checkable
class PresigningStore(ObjectStore, Presigner, Protocol):
    """An `ObjectStore` that can also presign GET URLs: what `open_store` returns."""


def _open_file(url: SplitResult, signer: LinkSigner | None) -> PresigningStore:
    from storage.local import LocalStore

    if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
        raise StorageConfigError(f"file store URLs must be absolute, like file:///srv/sdqueue; got {url.geturl()!r}")
    if url.query or url.fragment:
        raise StorageConfigError(f"file store URLs take no query or fragment; got {url.geturl()!r}")
    return LocalStore(Path(unquote(url.path)), signer=signer)


def _open_s3(url: SplitResult, signer: LinkSigner | None) -> PresigningStore:
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
    )


#: Scheme → factory. Azure (`az`) and GCS (`gs`) join here, each importing its SDK lazily.
FACTORIES: dict[str, Callable[[SplitResult, LinkSigner | None], PresigningStore]] = {
    "file": _open_file,
    "s3": _open_s3,
}


def open_store(url: str, *, signer: LinkSigner | None = None) -> PresigningStore:
    """The store `url` names: `file:///abs/path` or `s3://bucket/prefix?endpoint_url=...&region=...`.

    `signer` lets a local store presign links to the API's file route; backends that presign natively ignore it.
    Raises `StorageConfigError` for a malformed URL, an unknown scheme, or a backend whose SDK is missing.
    """
    parts = urlsplit(url)
    factory = FACTORIES.get(parts.scheme.lower())
    if factory is None:
        supported = ", ".join(f"{scheme}://" for scheme in sorted(FACTORIES))
        raise StorageConfigError(f"unsupported storage URL {url!r}; supported schemes: {supported}")
    return factory(parts, signer)


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
