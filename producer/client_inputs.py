"""Input images as SDK callers give them: a file path, bytes, a URL, an upload id, or what `upload` returned.

Local ones (paths and bytes) must be uploaded before a job can name them; everything here is the part of that which
is not I/O: finding them in a job's fields, telling their type, building the request that sends them to storage
(a plain request: no API key goes to storage), and putting the upload ids in their place. `Client` and
`AsyncClient` send.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .errors import ProducerError
from .jobs import ControlPreprocess, ImageRef, UploadCreated, is_upload_id

#: What an image field of `submit` takes.
ImageSource = str | os.PathLike[str] | bytes | ImageRef | UploadCreated | Mapping[str, Any]
_URL = re.compile(r"^(https?://|data:)", re.IGNORECASE)
_PREPROCESSORS = {p.value for p in ControlPreprocess} - {ControlPreprocess.NONE.value}


@dataclass(frozen=True)
class LocalImage:
    """Bytes to upload, their type (sniffed from the bytes) and where they came from (for messages)."""

    data: bytes
    content_type: str
    origin: str


def sniff(data: bytes) -> str | None:
    """The image type the bytes start with (PNG, JPEG, WebP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def local_image(value: object, *, field: str, base: Path | None = None) -> LocalImage | None:
    """`value` read as a local image (a path, relative to `base` when given, or bytes), or None for a reference
    the server resolves itself (a URL, a data URL, an upload id, an `ImageRef`); raises `ProducerError` naming
    `field` for a path that is not there or bytes that are no image."""
    if isinstance(value, bytes):
        return _typed(value, field, "bytes")
    if isinstance(value, str) and (_URL.match(value) or is_upload_id(value)):
        return None
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        path = path if base is None or path.is_absolute() else base / path
        if not path.is_file():
            raise ProducerError(f"{field}: {str(value)!r} is no file, nor an https:// or data: URL, nor an upload id")
        return _typed(path.read_bytes(), field, str(path))
    return None


def as_reference(value: object) -> Any:
    """A reference as the job's JSON takes it: `{"upload": id}` or `{"url": …}`."""
    if isinstance(value, UploadCreated):
        return value.image.model_dump(mode="json")
    if isinstance(value, ImageRef):
        return value.model_dump(mode="json")
    if isinstance(value, str):
        return {"upload": value} if is_upload_id(value) else {"url": value}
    return dict(value) if isinstance(value, Mapping) else value


def find_local(fields: Mapping[str, Any], *, base: Path | None = None) -> dict[str, LocalImage]:
    """The local images among a job's fields, by field path (`image`, `controlnets.0.image`)."""
    found: dict[str, LocalImage] = {}

    def visit(path: str, value: object) -> object:
        local = local_image(value, field=path, base=base)
        if local is not None:
            found[path] = local
        return value

    _walk(fields, visit)
    return found


def pending(found: Mapping[str, LocalImage], seen: Mapping[str, UploadCreated]) -> dict[str, LocalImage]:
    """The distinct images of `found` not yet uploaded (`seen`: uploads of this call by content digest)."""
    return {digest(local): local for local in found.values() if digest(local) not in seen}


def uploaded_references(found: Mapping[str, LocalImage], seen: Mapping[str, UploadCreated]) -> dict[str, ImageRef]:
    """Each found image's upload, by field path, once every one is in `seen`."""
    return {path: seen[digest(local)].image for path, local in found.items()}


def digest(local: LocalImage) -> str:
    """What identifies an image's content (one upload per distinct image in a call)."""
    return hashlib.sha256(local.data).hexdigest()


def with_references(fields: Mapping[str, Any], uploaded: Mapping[str, ImageRef]) -> dict[str, Any]:
    """The fields with each local image replaced by its upload (`uploaded`, by path) and every other image given as
    the reference JSON the API takes."""
    return _walk(
        fields, lambda path, value: uploaded[path].model_dump(mode="json") if path in uploaded else as_reference(value)
    )


def storage_request(grant: UploadCreated, image: LocalImage, timeout: httpx.Timeout) -> httpx.Request:
    """The request that sends `image` to storage as `grant` says (a PUT with its headers, or S3's POST form), built
    outside any client so that no client header (the API key) is merged in."""
    extensions = {"timeout": timeout.as_dict()}
    if grant.method == "POST":
        files = {"file": ("upload", image.data, grant.content_type)}
        return httpx.Request("POST", grant.url, data=dict(grant.fields), files=files, extensions=extensions)
    return httpx.Request("PUT", grant.url, content=image.data, headers=dict(grant.headers), extensions=extensions)


@contextmanager
def upload_errors(image: LocalImage) -> Iterator[None]:
    """Raise a transport failure sending `image` to storage as a `ProducerError` naming it."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ProducerError(f"could not upload {image.origin}: {exc or type(exc).__name__}") from exc


def check_stored(response: httpx.Response, image: LocalImage) -> None:
    """Raise `ProducerError` when storage refused the upload."""
    if not response.is_success:
        raise ProducerError(
            f"storage refused the upload of {image.origin} ({len(image.data)} bytes): HTTP {response.status_code}"
            f" {response.text[:200]}"
        )


def controlnet_option(spec: str) -> dict[str, Any]:
    """`sdq submit --controlnet MODEL:IMAGE` as a ControlNet unit; a MODEL that names a preprocessor (`canny`) also
    asks for it, so `canny:photo.png` turns an ordinary photo into edges on the worker."""
    model, image = _model_and_image(spec, "--controlnet")
    unit: dict[str, Any] = {"model": model, "image": image}
    if model in _PREPROCESSORS:
        unit["preprocess"] = model
    return unit


def ip_adapter_option(spec: str, scale: float | None) -> dict[str, Any]:
    """`sdq submit --ip-adapter MODEL:IMAGE [--ip-adapter-scale S]` as the request's `ip_adapter`."""
    model, image = _model_and_image(spec, "--ip-adapter")
    return {"model": model, "image": image} | ({} if scale is None else {"scale": scale})


def _model_and_image(spec: str, option: str) -> tuple[str, str]:
    model, sep, image = spec.partition(":")
    if not sep or not model or not image:
        raise ProducerError(f"{option} takes MODEL:IMAGE (like canny:photo.png); got {spec!r}")
    return model, image


def _typed(data: bytes, field: str, origin: str) -> LocalImage:
    content_type = sniff(data)
    if content_type is None:
        raise ProducerError(f"{field}: {origin} is not a PNG, JPEG or WebP image")
    return LocalImage(data, content_type, origin)


def _walk(fields: Mapping[str, Any], visit: Callable[[str, object], object]) -> dict[str, Any]:
    """A copy of `fields` with each image value `v` at path `p` replaced by `visit(p, v)`."""
    out = dict(fields)
    for name in ("image", "mask_image"):
        if out.get(name) is not None:
            out[name] = visit(name, out[name])
    if out.get("controlnets"):
        units = []
        for index, unit in enumerate(out["controlnets"]):
            unit = unit.model_dump(mode="json") if hasattr(unit, "model_dump") else dict(unit)
            if unit.get("image") is not None:
                unit["image"] = visit(f"controlnets.{index}.image", unit["image"])
            units.append(unit)
        out["controlnets"] = units
    if out.get("ip_adapter") is not None:
        adapter = out["ip_adapter"]
        adapter = adapter.model_dump(mode="json") if hasattr(adapter, "model_dump") else dict(adapter)
        if adapter.get("image") is not None:
            adapter["image"] = visit("ip_adapter.image", adapter["image"])
        out["ip_adapter"] = adapter
    return out
