"""What a client asks for: `JobRequest` (with its limits and validators) and the job id it is given."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .enums import DEFAULT_WEBHOOK_EVENTS, OutputFormat, Scheduler, WebhookEventType
from .inputs import (
    MAX_CONTROLNETS,
    ControlNets,
    ImageRef,
    IpAdapterRequest,
    is_empty,
    is_none,
    named_inputs,
)

MIN_SIDE_PX = 64
MAX_SIDE_PX = 2048
#: Largest width × height accepted (1536², e.g. 2048×1152). Peers cap SD 1.5 at 786 432 px; SDXL needs more.
MAX_AREA_PX = 1536 * 1536
MAX_PROMPT_CHARS = 2000
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_IMAGES = 8
MAX_SEED = 2**32 - 1
MAX_METADATA_ITEMS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_LORAS = 4
#: LoRA scales accepted: 1 is the trained strength, 0 is no effect, negative inverts it.
MAX_LORA_SCALE = 4.0
#: `strength` of an image-to-image job that gives none (diffusers' default).
DEFAULT_STRENGTH = 0.8
#: `strength` of an inpainting job that gives none: the masked area is repainted from noise, as diffusers'
#: inpainting pipelines do by default (0.8 would leave the old content showing through the mask).
DEFAULT_INPAINT_STRENGTH = 1.0

_JOB_ID = re.compile(r"[0-9a-f]{32}")
# A model reference: `tiny`, a hub id (`org/name`, optionally `@revision`), an absolute path on the worker,
# or a storage URL (`s3://…`, `gs://…`, `az://…`, `file://…`). No whitespace or control characters.
# Validators use fullmatch: `$` would let a trailing newline through.
_MODEL_REF = re.compile(r"[A-Za-z0-9][\w.\-/:@+~=]{0,511}|/[\w.\-/@+~=]{1,511}")


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError(f"must be a multiple of 8 (got {value}; try {value // 8 * 8} or {value // 8 * 8 + 8})")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _model_ref(value: str) -> str:
    if not _MODEL_REF.fullmatch(value) or ".." in value.split("/"):
        raise ValueError("must be 'tiny', a hub id like 'org/name', an absolute path or a storage URL")
    return value


def validated_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_ITEMS:
        raise ValueError(f"at most {MAX_METADATA_ITEMS} entries")
    for key, item in value.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_CHARS:
            raise ValueError(f"keys must be 1–{MAX_METADATA_KEY_CHARS} characters (key {key[:20]!r})")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(f"values must be at most {MAX_METADATA_VALUE_CHARS} characters (key {key!r})")
    return value


Side = Annotated[int, Field(ge=MIN_SIDE_PX, le=MAX_SIDE_PX), AfterValidator(_multiple_of_8)]


def _lora_name(value: str) -> str:
    if not _MODEL_REF.fullmatch(value) or ".." in value.split("/"):
        raise ValueError("must be a LoRA name, a hub id like 'org/name', an absolute path or a storage URL")
    return value


class LoraRequest(BaseModel):
    """One LoRA adapter a job applies: a name in the worker's cache (`my-style`), a hub id, a path or a storage URL,
    and its strength."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(_lora_name)]
    scale: float = Field(default=1.0, ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)


class RefinerRequest(BaseModel):
    """A second model that finishes an SDXL job: the base denoises the first `switch_at` of the noise schedule and
    the refiner (e.g. `stabilityai/stable-diffusion-xl-refiner-1.0`) the rest, in the same job."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: Annotated[str, AfterValidator(_model_ref)] = Field(description="The refiner model.")
    switch_at: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="Fraction of the noise schedule the base model denoises (0–1)."
    )


def _unique_loras(value: tuple[LoraRequest, ...]) -> tuple[LoraRequest, ...]:
    names = [lora.name for lora in value]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each LoRA at most once (repeated: {', '.join(repeated)})")
    return value


class JobRequest(BaseModel):
    """A text-to-image job as a client submits it. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_not_blank)]
    negative_prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] = ""
    model: Annotated[str | None, AfterValidator(lambda v: v if v is None else _model_ref(v))] = Field(
        default=None, description="Model to run; the server's default model when omitted."
    )
    width: Side = 512
    height: Side = 512
    steps: int = Field(default=30, ge=1, le=MAX_STEPS)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=MAX_GUIDANCE)
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Seed of the first image; image n uses seed + n. Random if omitted.",
    )
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    scheduler: Scheduler = Scheduler.DEFAULT
    output_format: OutputFormat = OutputFormat.PNG
    webhook_url: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://\S+$")] = Field(
        default=None,
        description="Called with signed Standard Webhooks events as the job changes state (https in production).",
    )
    webhook_events: list[WebhookEventType] | None = Field(
        default=None,
        max_length=8,
        description="Events to send to `webhook_url`; default every state change but `job.progress`.",
    )
    loras: Annotated[tuple[LoraRequest, ...], Field(max_length=MAX_LORAS), AfterValidator(_unique_loras)] = Field(
        default=(), description=f"LoRA adapters applied to the model, each with a scale; at most {MAX_LORAS}."
    )
    refiner: RefinerRequest | None = Field(
        default=None, description="An SDXL refiner that runs as the job's second stage; none by default."
    )
    metadata: Annotated[dict[str, str], AfterValidator(validated_metadata)] = Field(default_factory=dict)
    # Image inputs (producer/jobs/inputs.py). Each is left out of the JSON while unset, so a text-only request
    # serializes, hashes (idempotency) and groups into cohorts exactly as before they existed.
    image: ImageRef | None = Field(
        default=None, exclude_if=is_none, description="Start from this image: image-to-image, or the one to inpaint."
    )
    strength: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        exclude_if=is_none,
        description=(
            f"How much of `image` is repainted: 0 keeps it, 1 ignores it (when omitted: {DEFAULT_STRENGTH} for"
            f" image-to-image, {DEFAULT_INPAINT_STRENGTH} for inpainting)."
        ),
    )
    mask_image: ImageRef | None = Field(
        default=None,
        exclude_if=is_none,
        description="Inpainting: white pixels are repainted, black ones kept; the same size as `image`.",
    )
    controlnets: ControlNets = Field(
        default=(), exclude_if=is_empty, description=f"ControlNet units, at most {MAX_CONTROLNETS}."
    )
    ip_adapter: IpAdapterRequest | None = Field(
        default=None, exclude_if=is_none, description="A reference image whose look the output borrows."
    )

    @field_validator("height")
    @classmethod
    def _area(cls, height: int, info: ValidationInfo) -> int:
        # On `height` (validated after `width`) so that the error names a field.
        width = info.data.get("width")
        if width is not None and width * height > MAX_AREA_PX:
            raise ValueError(
                f"width × height must be at most {MAX_AREA_PX} px (got {width}×{height} = {width * height})"
            )
        return height

    @field_validator("webhook_events")
    @classmethod
    def _job_events(cls, events: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
        if events is not None and WebhookEventType.BATCH_COMPLETED in events:
            raise ValueError("batch.completed is sent to a batch's webhook, not a job's")
        return events

    @field_validator("strength", "mask_image")
    @classmethod
    def _needs_image(cls, value: object, info: ValidationInfo) -> object:
        # On the dependent fields (validated after `image`) so that the error names them.
        if value is not None and info.data.get("image") is None:
            raise ValueError("needs an image: give `image` too")
        return value

    @property
    def has_inputs(self) -> bool:
        """Whether the job carries any input image."""
        return any(ref is not None for ref in (self.image, self.mask_image, self.ip_adapter)) or bool(self.controlnets)

    @property
    def effective_strength(self) -> float:
        """The strength the worker applies: `strength`, or when omitted (left unset in the record, so that jobs
        submitted singly and in batches group alike) `DEFAULT_INPAINT_STRENGTH` for inpainting and
        `DEFAULT_STRENGTH` for image-to-image."""
        if self.strength is not None:
            return self.strength
        return DEFAULT_INPAINT_STRENGTH if self.mask_image is not None else DEFAULT_STRENGTH

    def input_images(self) -> list[tuple[str, str, ImageRef]]:
        """Every input image as (field path, as errors name it; object name under `inputs/<job>/`; reference)."""
        return named_inputs(self.image, self.mask_image, self.controlnets, self.ip_adapter)

    @property
    def wanted_webhook_events(self) -> frozenset[WebhookEventType]:
        """The events this job's webhook receives."""
        return DEFAULT_WEBHOOK_EVENTS if self.webhook_events is None else frozenset(self.webhook_events)

    def resolution(self, default_model: str) -> dict[str, Any]:
        """What resolving sets: a concrete model and a recorded seed (`resolved` applies it to a copy; the job
        service applies it to the request's JSON dump, which is what it writes)."""
        seed = self.seed if self.seed is not None else secrets.randbelow(MAX_SEED + 1)
        return {"model": self.model or default_model, "seed": seed}

    def resolved(self, default_model: str) -> JobRequest:
        """The request with every server-side default filled in: a concrete model and a recorded seed."""
        return self.model_copy(update=self.resolution(default_model))


def new_job_id() -> str:
    """A fresh, unguessable job id (32 lowercase hex characters: 128 random bits)."""
    return secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    """Whether `value` has the shape of a job id (so it is safe to use in a Redis key or an object key)."""
    return bool(_JOB_ID.fullmatch(value))


def output_key(job_id: str, index: int, fmt: OutputFormat, attempt: int = 1) -> str:
    """Object key of image `index` of a job, scoped by the attempt that rendered it: an attempt that lost its lease
    (a stalled worker the janitor gave up on) writes beside the winner's images, never over them, and deletes what
    it wrote once its settle is fenced off. The first attempt, the usual one, keeps the short key."""
    if attempt <= 1:
        return f"jobs/{job_id}/{index}.{fmt.extension}"
    return f"jobs/{job_id}/attempt-{attempt}/{index}.{fmt.extension}"
