"""`/ui`: the dashboard's static files, each with a strict Content-Security-Policy.

The pages are plain files shipped in the wheel (no build step, nothing fetched from elsewhere). Every script is a
same-origin ES module and every style a same-origin stylesheet, so the policy forbids inline script, inline style
and eval outright. Images are the one thing loaded from other origins: outputs are presigned URLs of the user's
own bucket (S3, Azure, GCS or this API's `/v1/files`), so `img-src` allows https and the http origin this
server's own presigned links use (a local store or an emulator).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from storage import Presigner, StorageError

from .deps import Deps

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_BASE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; font-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy(image_origins: tuple[str, ...] = ()) -> str:
    """The policy of every /ui response; `image_origins` are extra (http) origins presigned images come from."""
    images = " ".join(("'self'", "https:", "data:", "blob:", *image_origins))
    return f"{_BASE_POLICY}; img-src {images}"


def presigned_origin(http: Request) -> tuple[str, ...]:
    """The http origin this server's presigned links point at (https needs no entry), learned once per app."""
    cached: tuple[str, ...] | None = getattr(http.app.state, "ui_image_origins", None)
    if cached is not None:
        return cached
    origins: tuple[str, ...] = ()
    objects = Deps.of(http).objects
    if isinstance(objects, Presigner):
        try:  # signing is local for every backend but Azure user-delegation keys; a failure only narrows img-src
            url = urlsplit(objects.presign_get("ui/origin-probe", expires_in=timedelta(minutes=1)))
            if url.scheme == "http" and url.netloc:
                origins = (f"http://{url.netloc}",)
        except StorageError as exc:
            log.warning("cannot learn the presigned-URL origin for the dashboard's img-src: %s", exc)
    http.app.state.ui_image_origins = origins
    return origins


def _static(name: str) -> bytes | None:
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    path = resources.files("producer.ui").joinpath("static", *name.split("/"))
    return path.read_bytes() if path.is_file() else None


@router.get("/", response_model=None)
def root() -> RedirectResponse:
    """The dashboard is the API's front page."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui", response_model=None)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{name:path}", response_model=None)
def ui_file(name: str, http: Request) -> Response:
    """One static file of the dashboard (`index.html` for the folder itself); 404 for anything else."""
    name = name or "index.html"
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _static(name) if suffix in _TYPES else None
    headers = {
        "Content-Security-Policy": content_security_policy(presigned_origin(http)),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    if body is None:
        return Response(b"not found", status_code=404, media_type="text/plain", headers=headers)
    return Response(body, media_type=_TYPES[suffix], headers=headers)
