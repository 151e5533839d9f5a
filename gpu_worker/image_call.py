"""A pipeline call conditioned on images: which pipeline runs it, its image arguments, and what follows it.

Every job of a cohort shares one `InputSpec` (the cohort key says so); each image row of the call brings its job's
own images: the init image and mask (image-to-image, inpainting), one control image per ControlNet, the IP-Adapter's
reference image. A job asking for n images brings its inputs to n rows, which differ only in their seeds.

Two behaviours are the worker's, not diffusers':
- strength 0 repaints nothing: the job's image is its output, and no pipeline call is made (diffusers would still
  run the last step or two of the schedule on it);
- inpainting pastes the job's image back outside the mask after decoding (as A1111 does): the VAE's round trip
  alone would blur and shift colours in pixels that were to be kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .adapters import adapters_of
from .conditioning import PLAIN, InputSpec, Mode, PreparedInputs
from .errors import InvalidInputError
from .families import Family, traits_of
from .ip_adapter import rows_as_given

if TYPE_CHECKING:
    from PIL import Image

    from producer.jobs import JobRequest

#: Families whose diffusers pipelines sdqueue runs with image inputs.
IMAGE_FAMILIES = frozenset({Family.SD, Family.SDXL})


def cohort_spec(inputs: Sequence[PreparedInputs | None]) -> InputSpec:
    """The spec every job of a cohort shares; `ValueError` if they do not (the cohort key keeps them apart)."""
    specs = {(item.spec if item is not None else PLAIN) for item in inputs}
    if len(specs) > 1:
        raise ValueError("the jobs of one pipeline call must share their input spec (mode, strength, adapters)")
    return specs.pop() if specs else PLAIN


def check_inputs(pipe: Any, spec: InputSpec, request: JobRequest) -> None:
    """Raise `InvalidInputError` if `pipe`'s model cannot run `spec`, naming the field."""
    unet = getattr(pipe, "unet", None)
    inpainting_model = unet is not None and int(unet.config.in_channels) == 9
    if inpainting_model and spec.mode is not Mode.INPAINT:
        raise InvalidInputError("mask_image: this is an inpainting model; give `image` and `mask_image`")
    if spec.is_plain:
        return
    family = traits_of(pipe).family
    if family not in IMAGE_FAMILIES:
        field = "controlnets" if spec.controlnets else "ip_adapter" if spec.ip_adapter else "image"
        raise InvalidInputError(f"{field}: {family.value} models do not take image inputs here yet (SD and SDXL do)")
    if getattr(request, "refiner", None) is not None:
        raise InvalidInputError("refiner: a refiner stage does not combine with image inputs")


def prepare_call(
    pipe: Any, spec: InputSpec, rows: Sequence[PreparedInputs | None], request: JobRequest
) -> tuple[Any, dict[str, Any]]:
    """The pipeline that runs `spec` (the base pipeline for plain text-to-image) and the image arguments of a
    call with these image rows; switches the IP-Adapter on or off for it."""
    adapters = adapters_of(pipe)
    adapter = spec.ip_adapter
    adapters.ip.use(adapter.model if adapter is not None else None, adapter.scale if adapter is not None else 1.0)
    call = adapters.pipeline(spec.mode, [unit.model for unit in spec.controlnets])
    if spec.is_plain:
        return call, {}
    prepared = [row for row in rows if row is not None]
    if len(prepared) != len(rows):
        raise ValueError("every row of a call with image inputs needs its inputs")
    _check_sizes(prepared, request)
    arguments: dict[str, Any] = {}
    if spec.mode is not Mode.TEXT:
        arguments["image"] = [row.image for row in prepared]
        arguments["strength"] = spec.strength
    if spec.mode is Mode.INPAINT:
        arguments["mask_image"] = [row.mask for row in prepared]
    if spec.controlnets:
        # The ControlNet pipelines name the control image `image` unless `image` is the init image.
        name = "image" if spec.mode is Mode.TEXT else "control_image"
        units = spec.controlnets
        per_unit = [[row.control_images[index] for row in prepared] for index in range(len(units))]
        # Several ControlNets: one batch tensor each. Most ControlNet pipelines refuse a list of image lists there
        # ("a single batch of multiple conditionings"), and the one that takes it reads it rows first.
        arguments[name] = per_unit[0] if len(units) == 1 else [_batch_tensor(images) for images in per_unit]
        arguments["controlnet_conditioning_scale"] = _one_or_list([unit.conditioning_scale for unit in units])
        arguments["control_guidance_start"] = _one_or_list([unit.guidance_start for unit in units])
        arguments["control_guidance_end"] = _one_or_list([unit.guidance_end for unit in units])
    if adapter is not None:
        references = [row.ip_adapter_image for row in prepared]
        arguments["ip_adapter_image_embeds"] = adapters.ip.encode(references, guidance=_guided(call, request))
        rows_as_given(call)
    return call, arguments


def takes_size(call: Any) -> bool:
    """Whether the pipeline takes `width` and `height` (image-to-image pipelines take the image's size)."""
    return "width" in inspect.signature(type(call).__call__).parameters


def kept_images(rows: Sequence[PreparedInputs | None]) -> list[Image.Image]:
    """Strength 0: each row's own image, as its output (see the module doc)."""
    return [row.image.copy() for row in rows if row is not None and row.image is not None]


def overlay(images: Sequence[Image.Image], rows: Sequence[PreparedInputs | None]) -> list[Image.Image]:
    """Inpainting: each output with its row's image pasted back where the mask is black (kept)."""
    from PIL import Image

    pasted = []
    for image, row in zip(images, rows, strict=True):
        assert row is not None and row.image is not None and row.mask is not None
        pasted.append(Image.composite(image, row.image.convert(image.mode), row.mask.convert("L")))
    return pasted


def _check_sizes(rows: Sequence[PreparedInputs], request: JobRequest) -> None:
    size = (request.width, request.height)
    for row in rows:
        named = [("image", row.image), ("mask_image", row.mask)]
        named += [(f"controlnets.{index}.image", image) for index, image in enumerate(row.control_images)]
        for field, image in named:
            if image is not None and image.size != size:
                raise InvalidInputError(f"{field}: is {image.width}x{image.height}, the job is {size[0]}x{size[1]}")


def _batch_tensor(images: Sequence[Image.Image]) -> Any:
    """Control images as one (rows, 3, height, width) tensor in [0, 1]: what the pipelines make of a PIL list."""
    import numpy as np
    import torch

    stacked = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(stacked).permute(0, 3, 1, 2)


def _guided(call: Any, request: JobRequest) -> bool:
    """Whether the call runs classifier-free guidance, as the SD and SDXL pipelines decide it."""
    return request.guidance_scale > 1 and getattr(call.unet.config, "time_cond_proj_dim", None) is None


def _one_or_list(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values
