"""What a job conditions its images on besides the prompt: the worker's own view of image inputs.

`InputSpec` is the part a whole cohort shares (mode, strength, ControlNet models and their scales and windows,
IP-Adapter model and scale: `gpu_worker.cohorts` keys cohorts on it); `PreparedInputs` adds the job's own images,
decoded, normalized to the job's size and preprocessed (Canny edges), ready for a pipeline call. Both are plain
frozen data: they cross the device-process pipe as they are (a PIL image pickles as its raw pixel bytes, with no
encoding: 1024² RGB, 3 MB, crosses in a few milliseconds).

Normalization happens here so that equal work gets equal keys: an image-to-image job at strength 1 ignores its image
(diffusers would still add the image to its first noise; "1 ignores it" is the contract), so its spec is that of a
text-to-image job and the two share a cohort and an image for the same seed.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


class Mode(str, enum.Enum):
    """What a pipeline call starts from."""

    TEXT = "text"  # noise: text-to-image (with or without ControlNets / an IP-Adapter)
    IMAGE = "img2img"  # the job's image, noised to `strength`
    INPAINT = "inpaint"  # the job's image, repainted where its mask is white


class Preprocess(str, enum.Enum):
    """What the worker computes from a ControlNet's image before use."""

    NONE = "none"  # the image is a control map already
    CANNY = "canny"  # Canny edges of an ordinary photo (`gpu_worker.canny`)


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet of a call: its model, how strongly, and over which share of the steps."""

    model: str
    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    preprocess: Preprocess = Preprocess.NONE


@dataclass(frozen=True)
class IpAdapterUnit:
    """The IP-Adapter of a call and its scale."""

    model: str
    scale: float = 1.0


@dataclass(frozen=True)
class InputSpec:
    """Everything about a job's inputs that its cohort must share (see the module doc)."""

    mode: Mode = Mode.TEXT
    #: Share of the schedule that is run, from the noisy end (image-to-image and inpainting).
    strength: float = 1.0
    controlnets: tuple[ControlUnit, ...] = ()
    ip_adapter: IpAdapterUnit | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be within 0 and 1, not {self.strength}")
        if self.mode is Mode.TEXT and self.strength != 1.0:
            object.__setattr__(self, "strength", 1.0)  # meaningless without an image: one key for every text job
        if self.mode is Mode.IMAGE and self.strength == 1.0:
            object.__setattr__(self, "mode", Mode.TEXT)  # see the module doc

    @property
    def is_plain(self) -> bool:
        """Plain text-to-image: nothing but the prompt."""
        return self.mode is Mode.TEXT and not self.controlnets and self.ip_adapter is None

    @property
    def keeps_input(self) -> bool:
        """Strength 0: nothing is repainted, the job's image is its output (no pipeline call)."""
        return self.mode is not Mode.TEXT and self.strength == 0.0

    def key(self) -> str:
        """A string equal for two specs exactly when their jobs may share a pipeline call."""
        return json.dumps(asdict(self), sort_keys=True, default=str)


PLAIN = InputSpec()


@dataclass(frozen=True)
class PreparedInputs:
    """A job's inputs ready for a pipeline call: its `spec` and its images (PIL, at the job's size but for the
    IP-Adapter's reference image, which the image encoder resizes itself)."""

    spec: InputSpec = PLAIN
    image: Image.Image | None = None
    #: White is repainted, black kept (mode "L").
    mask: Image.Image | None = None
    #: One control image per ControlNet of `spec`, in order, preprocessed already.
    control_images: tuple[Image.Image, ...] = field(default=())
    ip_adapter_image: Image.Image | None = None

    def __post_init__(self) -> None:
        spec = self.spec
        if spec.mode is not Mode.TEXT and self.image is None:
            raise ValueError(f"{spec.mode.value} needs an image")
        if spec.mode is Mode.INPAINT and self.mask is None:
            raise ValueError("inpainting needs a mask")
        if len(self.control_images) != len(spec.controlnets):
            raise ValueError(f"{len(spec.controlnets)} ControlNet(s) but {len(self.control_images)} control image(s)")
        if (spec.ip_adapter is None) != (self.ip_adapter_image is None):
            raise ValueError("an IP-Adapter and its reference image go together")


def spec_of(request: Any) -> InputSpec:
    """The `InputSpec` of a job request, from its image-input fields (`image`, `strength`, `mask_image`,
    `controlnets`, `ip_adapter`); a request without them (or from before they existed) is plain text-to-image."""
    image = getattr(request, "image", None)
    mask = getattr(request, "mask_image", None)
    mode = Mode.TEXT if image is None else Mode.INPAINT if mask is not None else Mode.IMAGE
    strength = getattr(request, "effective_strength", None) if image is not None else None
    units = tuple(
        ControlUnit(
            model=str(unit.model),
            conditioning_scale=float(unit.conditioning_scale),
            guidance_start=float(unit.guidance_start),
            guidance_end=float(unit.guidance_end),
            preprocess=Preprocess(str(getattr(unit.preprocess, "value", unit.preprocess))),
        )
        for unit in getattr(request, "controlnets", ()) or ()
    )
    adapter = getattr(request, "ip_adapter", None)
    ip = None if adapter is None else IpAdapterUnit(model=str(adapter.model), scale=float(adapter.scale))
    return InputSpec(mode=mode, strength=1.0 if strength is None else float(strength), controlnets=units, ip_adapter=ip)
