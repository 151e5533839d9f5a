"""`/ui`: the dashboard's static files, each with a strict Content-Security-Policy.

The pages are plain files shipped in the wheel (no build step, nothing fetched from elsewhere). Every script is a
same-origin ES module and every style a same-origin stylesheet, so the policy forbids inline script, inline style
and eval outright. Images are the one thing loaded from other origins: outputs are presigned URLs of the user's
own bucket (S3, Azure, GCS or this API's `/v1/files`), so `img-src` allows https and the http origin this
server's own presigned links use (a local store or an emulator). The New job page sends an input image straight to
storage through a presigned upload, so `connect-src` names that one origin too (and no other).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from storage import Presigner, StorageError, UploadSigner

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
    "default-src 'self'; script-src 'self'; style-src 'self'; font-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy(image_origins: tuple[str, ...] = (), upload_origins: tuple[str, ...] = ()) -> str:
    """The policy of every /ui response; `image_origins` are extra (http) origins presigned images come from and
    `upload_origins` the origin presigned uploads go to (where it is not this server)."""
    images = " ".join(("'self'", "https:", "data:", "blob:", *image_origins))
    connect = " ".join(("'self'", *upload_origins))
    return f"{_BASE_POLICY}; connect-src {connect}; img-src {images}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def presigned_origins(http: Request) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The http origin this server's presigned links point at (https needs no entry) and the origin its presigned
    uploads go to, learned once per app."""
    cached: tuple[tuple[str, ...], tuple[str, ...]] | None = getattr(http.app.state, "ui_origins", None)
    if cached is not None:
        return cached
    images: tuple[str, ...] = ()
    uploads: tuple[str, ...] = ()
    objects = Deps.of(http).objects
    # Signing is local for every backend but Azure user-delegation keys; a failure only narrows the policy.
    try:
        if isinstance(objects, Presigner):
            origin = _origin(objects.presign_get("ui/origin-probe", expires_in=timedelta(minutes=1)))
            images = (origin,) if origin.startswith("http://") else ()
        if isinstance(objects, UploadSigner):
            grant = objects.presign_upload("uploads/origin-probe", content_type="image/png", max_bytes=1)
            uploads = tuple(o for o in (_origin(grant.url),) if o)
    except StorageError as exc:
        log.warning("cannot learn the presigned-URL origins for the dashboard's policy: %s", exc)
    http.app.state.ui_origins = images, uploads
    return images, uploads


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
        "Content-Security-Policy": content_security_policy(*presigned_origins(http)),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    if body is None:
        return Response(b"not found", status_code=404, media_type="text/plain", headers=headers)
    return Response(body, media_type=_TYPES[suffix], headers=headers)
