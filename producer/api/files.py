"""Downloads for the local storage backend: HMAC-signed, expiring links (the local stand-in for presigned URLs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from storage import InvalidSignatureError, LocalStore, ObjectNotFoundError, StorageError

from .deps import Deps
from .errors import ErrorBody, error_response

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "The link was tampered with or has expired."},
    404: {"model": ErrorBody, "description": "No such object, or this server does not serve files."},
}
router = APIRouter(tags=["files"], responses=_RESPONSES)


@router.get("/v1/files/{key:path}", summary="Download an output through a signed link", response_model=None)
def download(key: str, http: Request, expires: str = "", signature: str = "") -> FileResponse | JSONResponse:
    """Serve one object of the local store; 403 when the link is tampered with or expired."""
    objects = Deps.of(http).objects
    if not isinstance(objects, LocalStore) or objects.signer is None:
        return error_response(404, "not_found", "this server does not serve files (storage is not local)")
    try:
        objects.signer.verify(key, expires, signature)
        path, info = objects.open_for_read(key)
    except InvalidSignatureError as exc:
        return error_response(403, "forbidden", str(exc))
    except ObjectNotFoundError:
        return error_response(404, "not_found", f"no object {key!r}")
    except StorageError as exc:  # e.g. a folder, or a key that tries to leave the store's root
        return error_response(404, "not_found", str(exc))
    headers = {"Content-Disposition": info.content_disposition} if info.content_disposition else {}
    return FileResponse(path, media_type=info.content_type or "application/octet-stream", headers=headers)
