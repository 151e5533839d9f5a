"""Route for uploads: an upload id and a presigned grant to send one image straight to the user's storage."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..inputs.submission import InputGate
from ..jobs import UploadCreated, UploadRequest
from .auth import CallerDep, KeyFirstRoute
from .errors import ERROR_RESPONSES

#: `KeyFirstRoute`: the key is checked before the body is read.
router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=ERROR_RESPONSES, route_class=KeyFirstRoute)


def gate_of(http: Request) -> InputGate:
    """The app's input checks (and its uploads)."""
    gate: InputGate = http.app.state.inputs
    return gate


@router.post("", status_code=201, response_model=UploadCreated, summary="Start an upload")
def create(http: Request, caller: CallerDep, body: UploadRequest | None = None) -> UploadCreated:
    """An upload id for the caller's tenant and a short-lived grant to send the image straight to storage (PUT, or
    the POST form S3 takes); then submit jobs with `{"upload": "<id>"}`. No `Authorization` header to storage."""
    return gate_of(http).uploads.create(caller.tenant, (body or UploadRequest()).content_type)
