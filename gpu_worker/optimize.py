"""Speed and memory settings applied to a freshly loaded pipeline, and torch.compile with its warm-up.

PyTorch's scaled-dot-product attention is what diffusers uses by default on torch 2, so `sdpa` changes nothing;
`xformers` swaps in its memory-efficient kernels when the package is installed. Channels-last memory format speeds
up the UNet's and VAE's convolutions on CUDA tensor cores. VAE slicing decodes a batch one image at a time (the
decode of a large batch is the peak of memory), and VAE tiling decodes images larger than the VAE's native size
tile by tile; neither changes an image at or below that size.

`torch.compile` is only applied through `compile_and_warm_up`, which the worker calls at boot for preloaded
models: compiling takes minutes, which no job should wait for (see `gpu_worker.compile`: every shape jobs bring is
warmed up, and the compiler's caches are kept in the model cache for the next boot).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from producer.jobs import Scheduler

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
    #: Where the compiler's cache artifacts are kept (the model cache's `compile/`); None: nowhere.
    compile_cache_dir: Path | None = None
    #: (width, height) pairs warmed up; empty: 512² and the model's native size.
    compile_sizes: tuple[tuple[int, int], ...] = ()
    #: Schedulers served (one warm-up per family); empty: all of them.
    compile_schedulers: tuple[Scheduler, ...] = ()
    #: The largest batch a call holds (SDQ_BATCH_MAX): above 1, batched shapes are warmed up too.
    batch_max: int = 1

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
            compile_cache_dir=settings.resolved_model_cache_dir / "compile",
            compile_sizes=tuple(settings.compile_sizes),
            compile_schedulers=tuple(settings.compile_schedulers),
            batch_max=settings.batch_max,
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


def compile_and_warm_up(pipe: Any, options: PipelineOptions, *, model: str = "model") -> float:
    """torch.compile `pipe`'s UNet and warm it up on every bucket `options` serve (`gpu_worker.compile`), with the
    compiler's caches kept in `options.compile_cache_dir`; returns the seconds it took."""
    from gpu_worker.compile import buckets
    from gpu_worker.compile import compile_and_warm_up as compile_buckets

    warm = buckets(
        pipe, sizes=options.compile_sizes, batch_max=options.batch_max, schedulers=options.compile_schedulers
    )
    report = compile_buckets(
        pipe, model=model, mode=options.compile_mode, cache_dir=options.compile_cache_dir, warm=warm
    )
    return report.seconds
