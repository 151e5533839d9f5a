"""Downloads and uploads for the local storage backend: HMAC-signed, expiring links (the local stand-in for
presigned URLs). Only `uploads/` keys can be written, each through a link `POST /v1/uploads` handed out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from storage import InvalidSignatureError, LocalStore, ObjectNotFoundError, StorageError

from .deps import Deps
from .errors import ERROR_RESPONSES, ErrorBody, error_response

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "The link was tampered with or has expired."},
    404: {"model": ErrorBody, "description": "No such object, or this server does not serve files."},
    413: {"model": ErrorBody, "description": "An upload over the link's byte limit."},
    500: ERROR_RESPONSES[500],
}
#: The only keys a signed PUT may write.
_WRITABLE_PREFIX = "uploads/"
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


@router.put("/v1/files/{key:path}", summary="Upload an input through a signed link", response_model=None)
async def upload(key: str, http: Request, expires: str = "", max_bytes: str = "", signature: str = "") -> Response:
    """Store the body under `key` of the local store; 403 for a tampered or expired link (or another Content-Type
    than the signed one), 413 for a body over the link's limit."""
    objects = Deps.of(http).objects
    if not isinstance(objects, LocalStore) or objects.signer is None:
        return error_response(404, "not_found", "this server does not take uploads (storage is not local)")
    content_type = http.headers.get("content-type", "")
    try:
        limit = objects.signer.verify_upload(key, expires, max_bytes, content_type, signature)
    except InvalidSignatureError as exc:
        return error_response(403, "forbidden", str(exc))
    if not key.startswith(_WRITABLE_PREFIX):
        return error_response(403, "forbidden", "signed links write only uploads")
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > limit:
            return error_response(413, "payload_too_large", f"the upload is over its limit of {limit} bytes")
    try:
        info = await run_in_threadpool(objects.put, key, bytes(body), content_type=content_type)
    except StorageError as exc:
        return error_response(404, "not_found", str(exc))
    return Response(status_code=200, headers={"ETag": f'"{info.etag}"'} if info.etag else {})
