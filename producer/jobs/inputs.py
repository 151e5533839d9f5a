"""Image inputs a job may carry: where each image comes from (`ImageRef`), ControlNet units and an IP-Adapter.

An image is given as `{"upload": "<id>"}` (from `POST /v1/uploads`), `{"url": "https://…"}` or `{"url":
"data:image/png;base64,…"}`; a bare string is read as `{"url": …}`. The API turns data URLs into uploads before it
records a job, so records and queue messages carry ids, not megabytes. Every field serializes only when set, so a
text-only request serializes exactly as it did before inputs existed.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .enums import TextEnum

#: Most ControlNet units one job may stack.
MAX_CONTROLNETS = 3
#: Ceiling on a data URL's decoded bytes that any server may accept (`SDQ_MAX_INLINE_IMAGE_BYTES` ≤ this).
MAX_INLINE_IMAGE_BYTES_LIMIT = 8 * 1024 * 1024
#: Longest `url` accepted: an https URL is at most 2048 characters, a data URL its base64 plus the header.
MAX_URL_CHARS = 64 + (MAX_INLINE_IMAGE_BYTES_LIMIT + 2) // 3 * 4
MAX_CONDITIONING_SCALE = 4.0
MAX_IP_ADAPTER_SCALE = 4.0
#: Image types an upload, a URL or a data URL may hold.
IMAGE_CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp")

# Anchored for pydantic's `pattern=` (Rust regex: `$` is the end); Python code uses fullmatch, since its `$` also
# matches before a final newline.
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|webp));base64,", re.IGNORECASE)  # RFC 2397: any case
_HTTP_URL = re.compile(r"^https?://\S{1,2040}$")
_MODEL_REF = re.compile(r"^[A-Za-z0-9][\w.\-/:@+~=]{0,511}$|^/[\w.\-/@+~=]{1,511}$")


def is_none(value: object) -> bool:
    """`exclude_if` for optional fields: an unset one is left out of the JSON (old clients and records match)."""
    return value is None


def is_empty(value: object) -> bool:
    """`exclude_if` for collection fields: an empty one is left out of the JSON."""
    return not value


def is_upload_id(value: str) -> bool:
    """Whether `value` has the shape of an upload id (32 lowercase hex characters: safe in keys)."""
    return bool(_UPLOAD_ID.fullmatch(value))


def upload_object_key(upload_id: str) -> str:
    """Where an upload's bytes live in the job storage."""
    return f"uploads/{upload_id}"


def input_object_key(job_id: str, name: str) -> str:
    """Where a job's prepared (decoded, checked, normalized) input `name` lives: read by every attempt."""
    return f"inputs/{job_id}/{name}.png"


def _is_data(url: str) -> bool:
    return url[:5].lower() == "data:"


class ImageRef(BaseModel):
    """One input image: exactly one of `upload` (an id from `POST /v1/uploads`) or `url` (https or a data URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload: str | None = Field(
        default=None, pattern=_UPLOAD_ID.pattern, exclude_if=is_none, description="An id from `POST /v1/uploads`."
    )
    url: str | None = Field(
        default=None,
        max_length=MAX_URL_CHARS,
        exclude_if=is_none,
        description="`https://…` (fetched once by the server, public addresses only) or"
        " `data:image/png;base64,…` (at most SDQ_MAX_INLINE_IMAGE_BYTES decoded).",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_string(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _url_shape(cls, url: str | None) -> str | None:
        if url is None:
            return None
        match = _DATA_URL.match(url)
        if match is None:
            if _is_data(url):
                raise ValueError("a data URL must be data:image/png|jpeg|webp;base64,<base64>")
            if not _HTTP_URL.fullmatch(url):
                raise ValueError("must be an https:// URL (at most 2048 characters) or a data:image/…;base64, URL")
            return url
        payload = url[match.end() :]
        if len(payload) > MAX_URL_CHARS - 64:
            raise ValueError(f"a data URL holds at most {MAX_INLINE_IMAGE_BYTES_LIMIT} bytes")
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the data URL's payload is not valid base64") from None
        return url

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.upload is None) == (self.url is None):
            raise ValueError('give exactly one of {"upload": "<id>"} or {"url": "https://… or data:…"}')
        return self

    @property
    def kind(self) -> Literal["upload", "url", "data"]:
        """Where the bytes come from."""
        if self.upload is not None:
            return "upload"
        return "data" if self.url is not None and _is_data(self.url) else "url"

    def inline(self) -> tuple[str, bytes] | None:
        """The content type and bytes of a data URL, or None for other kinds."""
        if self.url is None:
            return None
        match = _DATA_URL.match(self.url)
        if match is None:
            return None
        return match.group(1).lower(), base64.b64decode(self.url[match.end() :])


def _model_ref(value: str) -> str:
    if not _MODEL_REF.fullmatch(value) or ".." in value.split("/"):
        raise ValueError("must be a model name, a hub id like 'org/name', an absolute path or a storage URL")
    return value


ModelRef = Annotated[str, AfterValidator(_model_ref)]


class ControlPreprocess(TextEnum):
    """What the worker computes from a ControlNet's image before use: nothing (it is a control map already), or
    Canny edges of an ordinary photo."""

    NONE = "none"
    CANNY = "canny"


class ControlNetRequest(BaseModel):
    """One ControlNet unit: its model, its control image, how strongly and over which part of the schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: ModelRef
    image: ImageRef
    conditioning_scale: float = Field(default=1.0, ge=0.0, le=MAX_CONDITIONING_SCALE)
    guidance_start: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of the steps before it applies.")
    guidance_end: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of the steps after which it stops.")
    preprocess: ControlPreprocess = ControlPreprocess.NONE

    @field_validator("guidance_end")
    @classmethod
    def _after_start(cls, end: float, info: ValidationInfo) -> float:
        start = info.data.get("guidance_start")
        if start is not None and end <= start:
            raise ValueError(f"must be greater than guidance_start ({start})")
        return end


class IpAdapterRequest(BaseModel):
    """An IP-Adapter: a reference image whose look the output borrows, and how much."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: ModelRef
    image: ImageRef
    scale: float = Field(default=1.0, ge=0.0, le=MAX_IP_ADAPTER_SCALE)


ControlNets = Annotated[tuple[ControlNetRequest, ...], Field(max_length=MAX_CONTROLNETS)]


def named_inputs(
    image: ImageRef | None,
    mask_image: ImageRef | None,
    controlnets: tuple[ControlNetRequest, ...],
    ip_adapter: IpAdapterRequest | None,
) -> list[tuple[str, str, ImageRef]]:
    """Every input image as (field path as errors name it, object name under `inputs/<job>/`, reference)."""
    found: list[tuple[str, str, ImageRef]] = []
    if image is not None:
        found.append(("image", "image", image))
    if mask_image is not None:
        found.append(("mask_image", "mask", mask_image))
    for index, unit in enumerate(controlnets):
        found.append((f"controlnets.{index}.image", f"controlnet-{index}", unit.image))
    if ip_adapter is not None:
        found.append(("ip_adapter.image", "ip-adapter", ip_adapter.image))
    return found
