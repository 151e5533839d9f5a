"""Speed and memory settings applied to a freshly loaded pipeline, and torch.compile with its warm-up.

PyTorch's scaled-dot-product attention is what diffusers uses by default on torch 2, so `sdpa` changes nothing;
`xformers` swaps in its memory-efficient kernels when the package is installed. Channels-last memory format speeds
up the UNet's and VAE's convolutions on CUDA tensor cores. VAE slicing decodes a batch one image at a time (the
decode of a large batch is the peak of memory), and VAE tiling decodes images larger than the VAE's native size
tile by tile; neither changes an image at or below that size.

`torch.compile` is only applied through `compile_and_warm_up`, which the worker calls at boot for preloaded
models: compiling takes minutes, which no job should wait for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from gpu_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    """How loaded pipelines are set up (see the module doc); the defaults suit production on CUDA."""

    attention: Literal["sdpa", "xformers"] = "sdpa"
    channels_last: bool = True
    vae_slicing: bool = True
    vae_tiling: bool = True
    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> PipelineOptions:
        """The options a worker's settings ask for."""
        return cls(
            attention=settings.attention,
            channels_last=settings.channels_last,
            vae_slicing=settings.vae_slicing,
            vae_tiling=settings.vae_tiling,
            compile=settings.compile,
            compile_mode=settings.compile_mode,
        )


def optimize(pipe: Any, device: torch.device, options: PipelineOptions) -> None:
    """Apply `options` (all but compilation) to `pipe`, which is already on `device`."""
    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    if options.attention == "xformers":
        _enable_xformers(pipe)
    if options.channels_last and device.type == "cuda":
        for module in (unet, vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if vae is not None:
        if options.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        if options.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()


def _enable_xformers(pipe: Any) -> None:
    try:
        import xformers  # noqa: F401
    except ImportError:
        log.warning("SDQ_ATTENTION=xformers but xformers is not installed; using PyTorch SDPA")
        return
    try:
        pipe.enable_xformers_memory_efficient_attention()
    except Exception as exc:  # e.g. an xformers build that does not match this torch or GPU
        log.warning("xformers could not be enabled (%s); using PyTorch SDPA", exc)


def compile_and_warm_up(pipe: Any, options: PipelineOptions, *, steps: int = 2) -> float:
    """torch.compile `pipe`'s UNet and run it until the common shapes are compiled; returns the seconds it took.

    Warms up at the model's native size with one and two images, so that the batch dimension is compiled as
    dynamic and batches of other sizes do not recompile. Other image sizes still compile once on first use.
    """
    started = time.perf_counter()
    pipe.unet = torch.compile(pipe.unet, mode=options.compile_mode)
    side = int(pipe.unet.config.sample_size * getattr(pipe, "vae_scale_factor", 8))
    for images in (1, 2):
        pipe(
            prompt="warm-up",
            width=side,
            height=side,
            num_inference_steps=steps,
            num_images_per_prompt=images,
            output_type="latent",  # the VAE is not compiled; skip the decode
        )
    seconds = time.perf_counter() - started
    log.info("compiled and warmed up %s in %.1f s", type(pipe).__name__, seconds)
    return seconds
