"""The limits on input images, as settings (read once at an entry point) and as the value library code is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..jobs import MAX_INLINE_IMAGE_BYTES_LIMIT

if TYPE_CHECKING:
    from ..webhooks.ssrf import UrlPolicy

#: 4096²: far more than any model renders (inputs are scaled to the job's size), far less than a bomb.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
#: Pillow's own bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 9459²): Pillow refuses more as it opens a file, before
#: sdqueue's check could say what the limit really is, so SDQ_MAX_IMAGE_PIXELS stays at or under it.
PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


@dataclass(frozen=True)
class InputLimits:
    """What an input image may be. Every limit is checked again when the worker prepares the job."""

    #: Decoded bytes of a `data:` URL.
    max_inline_bytes: int = 1024 * 1024
    #: Bytes of an uploaded object or of a fetched URL's body.
    max_upload_bytes: int = 20 * 1024 * 1024
    #: width × height of any input, read from its header before it is decoded (decompression bombs stop there).
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    #: Lifetime of a presigned upload URL, in seconds.
    upload_url_expiry_s: int = 15 * 60
    #: How long an upload id stays usable by new jobs, in seconds (its object lives on while jobs need it).
    upload_ttl_s: int = 24 * 3600
    #: Time allowed for fetching one URL input, connect to last byte.
    fetch_timeout_s: float = 20.0

    @property
    def max_job_body_bytes(self) -> int:
        """The largest `POST /v1/jobs` body: room for the request and one data URL of `max_inline_bytes` (base64
        adds a third), so the data URLs of one job together carry about that much; larger images go as uploads."""
        return max(1024 * 1024, 256 * 1024 + self.max_inline_bytes * 4 // 3)


class InputSettings(BaseSettings):
    """Settings of image inputs, mixed into the settings of the API (and of the worker, which prepares inputs)."""

    model_config = SettingsConfigDict(env_prefix="SDQ_", extra="ignore")

    max_inline_image_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=MAX_INLINE_IMAGE_BYTES_LIMIT,
        description="SDQ_MAX_INLINE_IMAGE_BYTES: largest image a `data:` URL in a job may carry (decoded bytes).",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="SDQ_MAX_UPLOAD_BYTES: largest uploaded image (`POST /v1/uploads`) or fetched image URL.",
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        ge=64 * 64,
        le=PILLOW_MAX_IMAGE_PIXELS,
        description="SDQ_MAX_IMAGE_PIXELS: largest width × height of an input image (checked before decoding; at"
        " most 89478485, Pillow's own limit).",
    )
    upload_url_expiry_s: int = Field(
        default=15 * 60, ge=10, le=7 * 24 * 3600, description="SDQ_UPLOAD_URL_EXPIRY_S: lifetime of upload URLs."
    )
    upload_ttl_s: int = Field(
        default=24 * 3600,
        ge=60,
        description="SDQ_UPLOAD_TTL_S: how long an upload id may be used by new jobs (storage keeps the object"
        " longer, see the lifecycle rule on uploads/ in infra_templates).",
    )
    input_fetch_timeout_s: float = Field(
        default=20.0, gt=0, le=300, description="SDQ_INPUT_FETCH_TIMEOUT_S: time allowed to fetch one image URL."
    )
    input_url_https_only: bool = Field(
        default=True, description="SDQ_INPUT_URL_HTTPS_ONLY: image URLs must be https (allow-listed hosts excepted)."
    )
    input_url_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SDQ_INPUT_URL_ALLOW: comma-separated hosts and CIDRs image URLs may reach even though they are"
        " private or loopback (development only); empty = public addresses only.",
    )

    @field_validator("input_url_allow", mode="before")
    @classmethod
    def _comma_hosts(cls, value: object) -> object:
        from ..setting_types import comma_list

        return comma_list(value)

    def input_limits(self) -> InputLimits:
        """The limits as library code takes them."""
        return InputLimits(
            max_inline_bytes=self.max_inline_image_bytes,
            max_upload_bytes=self.max_upload_bytes,
            max_image_pixels=self.max_image_pixels,
            upload_url_expiry_s=self.upload_url_expiry_s,
            upload_ttl_s=self.upload_ttl_s,
            fetch_timeout_s=self.input_fetch_timeout_s,
        )

    def input_url_policy(self) -> UrlPolicy:
        """What image URLs may look like and reach: the SSRF guard's policy."""
        from ..webhooks.ssrf import UrlPolicy  # here: producer.webhooks imports the settings module

        return UrlPolicy.from_entries(self.input_url_allow, https_only=self.input_url_https_only)
