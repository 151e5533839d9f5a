"""The VAE decode: fp16-safe SDXL, a dtype that survives a failed decode, and tiling only where it is needed.

SDXL's VAE overflows in float16 (NaN, black images), so diffusers upcasts it to float32 for every decode and casts
it back afterwards, without a `finally`: one CUDA out-of-memory error mid-decode leaves the VAE in float32 for good,
and every later call fails on a dtype mismatch. On a GPU with bfloat16 (Ampere and later) `make_vae_fp16_safe`
runs the VAE in bfloat16 instead, which has float32's range: no overflow, no upcast, half the decode memory. Where
the upcast remains (older GPUs), `decoding` puts the VAE's dtype back after any failure.

VAE tiling bounds the decode's memory for very large images, but diffusers tiles everything above the VAE's native
size (512 px for SD 1.5), which is slower and can leave seams. `decoding` lets it tile only above
`TILE_ABOVE_NATIVE_AREA` times the native area.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .families import Family, family_of_class

#: Images up to this many times the VAE's native area (1024² for SD 1.5) decode in one piece.
TILE_ABOVE_NATIVE_AREA = 4


def make_vae_fp16_safe(pipe: Any) -> bool:
    """Run a float16 VAE that would be upcast for every decode (SDXL's) in bfloat16 instead; True if it did.

    Latents reach the VAE in the pipeline's float16; a pre-hook casts them on entry to the decoder. Input images
    (image-to-image, inpainting) reach the encoder in float16 too, and get the same hook; the latents it returns are
    cast to the pipeline's dtype by the pipelines themselves.
    """
    # Only SDXL's pipelines upcast (SD 1.x's VAE config says `force_upcast` too, but its pipeline ignores it: that
    # VAE decodes fine in float16).
    vae = getattr(pipe, "vae", None)
    if family_of_class(type(pipe).__name__) is not Family.SDXL or vae is None or vae.dtype != torch.float16:
        return False
    if not getattr(vae.config, "force_upcast", False):
        return False
    vae.to(torch.bfloat16)
    vae.register_to_config(force_upcast=False)
    for module in (getattr(vae, "post_quant_conv", None), vae.decoder, vae.encoder, getattr(vae, "quant_conv", None)):
        if module is not None:
            module.register_forward_pre_hook(_cast_to_module_dtype)
    return True


def _cast_to_module_dtype(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    dtype = next(module.parameters()).dtype
    return tuple(arg.to(dtype) if isinstance(arg, torch.Tensor) and arg.is_floating_point() else arg for arg in args)


def needs_tiling(vae: Any, width: int, height: int) -> bool:
    """Whether a `width` x `height` decode is large enough to tile (see the module doc)."""
    native = int(getattr(vae, "tile_sample_min_size", 0) or getattr(vae.config, "sample_size", 512))
    return width * height > TILE_ABOVE_NATIVE_AREA * native * native


@contextmanager
def decoding(pipe: Any, width: int, height: int) -> Iterator[None]:
    """Wrap a pipeline call: tiling (where the options enabled it) only if this size needs it, and the VAE's dtype
    restored afterwards whatever happened (diffusers' upcast is not undone on failure)."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        yield
        return
    dtype, tiling = vae.dtype, bool(getattr(vae, "use_tiling", False))
    if tiling and not needs_tiling(vae, width, height):
        vae.use_tiling = False
    try:
        yield
    finally:
        if tiling:
            vae.use_tiling = True
        if vae.dtype != dtype:
            vae.to(dtype)
