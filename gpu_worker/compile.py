"""torch.compile of a preloaded pipeline's UNet: warmed up at boot on every shape jobs will bring, with the
compiler's caches kept in the model cache so that a restarted worker (or a fresh VM with the same cache disk) does
not compile again.

Warm-up runs the job path itself (`inference.generate_batch`) once per *bucket*: each image size served
(`SDQ_COMPILE_SIZES`, by default the API's 512² and the model's native size), each scheduler family (schedulers
whose timesteps have the same dtype share a compiled graph; PNDM's are integers, Euler's floats), and each batch
shape: one image without classifier-free guidance (UNet batch 1), one with it (2) and, when batches are served, two
with it (4, after which dynamo compiles the batch dimension as dynamic and no other batch size recompiles).
Dynamo's recompile limit is raised to fit them all: past it, a model would silently fall back to eager.

The caches, both under `<model cache>/compile/`: Inductor's and Triton's own directories (compiled kernels;
`compiler_cache_env`, set by the worker's entry point), and torch's portable cache artifacts (FX graph,
AOTAutograd, autotuning: `torch.compiler.save_cache_artifacts`), one file per key, which a machine with an empty
Inductor directory replays. The key covers the model
(its UNet config), the buckets, the compile mode, the torch version and the device kind, so no artifact is ever
replayed where it does not apply. A worker loads the artifacts before compiling; dynamo still traces (seconds), but
Inductor's code generation and autotuning (minutes on a GPU) are cache hits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from producer.jobs import JobRequest, Scheduler

log = logging.getLogger(__name__)

#: The API's default size: every model serves it unless a request asks otherwise.
DEFAULT_SIDE = 512
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Bucket:
    """One shape a compiled UNet must serve without recompiling."""

    width: int
    height: int
    scheduler: Scheduler
    images: int
    guidance: bool

    def request(self, model: str, steps: int) -> JobRequest:
        """A resolved job request of this shape."""
        return JobRequest(
            prompt="warm-up",
            model=model,
            width=self.width,
            height=self.height,
            steps=steps,
            guidance_scale=7.5 if self.guidance else 1.0,
            scheduler=self.scheduler,
            num_images=self.images,
            seed=0,
        ).resolved(model)


@dataclass(frozen=True)
class CompileReport:
    """What a boot compile did: seconds, buckets warmed up, and whether the cache file had artifacts for it."""

    seconds: float
    buckets: int
    cache_file: Path | None
    cache_hit: bool


def compiler_cache_env(model_cache: Path) -> dict[str, str]:
    """Environment variables that put Inductor's and Triton's own caches (compiled kernels, `.so` files) under
    `model_cache/compile/`, not in /tmp: set by the worker's entry point, before torch is imported."""
    root = Path(model_cache) / "compile"
    return {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"), "TRITON_CACHE_DIR": str(root / "triton")}


def buckets(
    pipe: Any, *, sizes: Sequence[tuple[int, int]] = (), batch_max: int = 1, schedulers: Sequence[Scheduler] = ()
) -> list[Bucket]:
    """The buckets of `pipe` (see the module doc); `sizes` empty: 512² and the native size; `schedulers` empty:
    every scheduler, one per family."""
    native = _native_side(pipe)
    sides = list(sizes) or sorted({(DEFAULT_SIDE, DEFAULT_SIDE), (native, native)})
    families = scheduler_families(pipe, schedulers or list(Scheduler))
    shapes = [(1, False), (1, True)] + ([(2, True)] if batch_max >= 2 else [])
    return [
        Bucket(width, height, scheduler, images, guidance)
        for width, height in sides
        for scheduler in families
        for images, guidance in shapes
    ]


def scheduler_families(pipe: Any, schedulers: Sequence[Scheduler]) -> list[Scheduler]:
    """One scheduler per timestep dtype among `schedulers` (the default one first), set up on `pipe`'s config.
    Schedulers this model cannot run (DDIM on a flow-matching model) are no family of it."""
    from gpu_worker.schedulers import apply_scheduler

    chosen: dict[torch.dtype | None, Scheduler] = {None: Scheduler.DEFAULT}
    for scheduler in (s for s in schedulers if s is not Scheduler.DEFAULT):
        try:
            apply_scheduler(pipe, scheduler)
            pipe.scheduler.set_timesteps(2)
            dtype = pipe.scheduler.timesteps.dtype
        except Exception as exc:  # InvalidInputError, or a scheduler that needs the pipeline's own arguments
            log.debug("no warm-up for scheduler %s: %s", scheduler.value, exc)
            continue
        chosen.setdefault(dtype, scheduler)
    apply_scheduler(pipe, Scheduler.DEFAULT)
    try:  # the default's own family, so that a scheduler of the same dtype is not warmed up twice
        pipe.scheduler.set_timesteps(2)
        default_dtype = pipe.scheduler.timesteps.dtype
    except Exception:
        default_dtype = None
    families = [Scheduler.DEFAULT, *(s for dtype, s in chosen.items() if dtype is not None and dtype != default_dtype)]
    return list(dict.fromkeys(families))


def denoiser_name(pipe: Any) -> str:
    """The pipeline attribute that holds its denoiser: `unet` (SD 1.x/2.x, SDXL) or `transformer` (SD 3, Flux)."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def _native_side(pipe: Any) -> int:
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    if denoiser_name(pipe) == "unet":
        return int(pipe.unet.config.sample_size) * scale
    return int(getattr(pipe, "default_sample_size", 128)) * scale


def cache_key(model: str, pipe: Any, warm: Sequence[Bucket], mode: str) -> str:
    """The artifact file's name for this model, bucket set, compile mode, torch version and device kind."""
    device = pipe.device
    kind = (
        f"{torch.cuda.get_device_name(device)} sm{''.join(map(str, torch.cuda.get_device_capability(device)))}"
        if device.type == "cuda"
        else f"{device.type} {platform.machine()}"
    )
    identity = {
        "denoiser": dict(getattr(pipe, denoiser_name(pipe)).config),
        "dtype": str(getattr(pipe, denoiser_name(pipe)).dtype),
        "buckets": [[b.width, b.height, b.scheduler.value, b.images, b.guidance] for b in warm],
        "mode": mode,
        "torch": torch.__version__,
        "device": kind,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    readable = _UNSAFE.sub("-", model).strip("-.")[:60]
    return f"{readable}--{_UNSAFE.sub('-', kind)}--torch-{torch.__version__}--{digest}.bin"


def compile_and_warm_up(
    pipe: Any,
    *,
    model: str,
    mode: str,
    cache_dir: Path | None,
    warm: Sequence[Bucket],
    steps: int = 2,
) -> CompileReport:
    """torch.compile `pipe`'s UNet, warm it up on every bucket in `warm` and keep the compiler's artifacts in
    `cache_dir` (None: not kept); returns what it did. Call once per loaded pipeline."""
    from gpu_worker.inference import generate_batch

    started = time.perf_counter()
    cache_file = cache_dir / cache_key(model, pipe, warm, mode) if cache_dir is not None else None
    hit = cache_file is not None and _load_artifacts(cache_file)
    dynamo = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, limit, max(getattr(dynamo, limit), 2 * len(warm) + 8))
    name = denoiser_name(pipe)
    setattr(pipe, name, torch.compile(getattr(pipe, name), mode=mode))
    for bucket in warm:
        # The job path itself, decode included: the VAE is not compiled, but a call without it (`output_type=
        # "latent"`) would differ from a job's in ways dynamo guards on.
        generate_batch(pipe, [bucket.request(model, steps)])
    if cache_file is not None and not hit:
        _save_artifacts(cache_file)
    report = CompileReport(time.perf_counter() - started, len(warm), cache_file, hit)
    log.info(
        "compiled %s: %d buckets warmed up in %.1f s (compile cache %s: %s)",
        model,
        report.buckets,
        report.seconds,
        "hit" if hit else "miss",
        cache_file,
    )
    return report


def _load_artifacts(cache_file: Path) -> bool:
    try:
        data = cache_file.read_bytes()
    except FileNotFoundError:
        return False
    try:
        return torch.compiler.load_cache_artifacts(data) is not None
    except Exception as exc:  # a damaged or foreign file: compile from scratch and write a fresh one
        log.warning("compile cache %s could not be used (%s); compiling from scratch", cache_file, exc)
        return False


def _save_artifacts(cache_file: Path) -> None:
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        log.warning("torch.compile produced no cache artifacts to keep")
        return
    data, _ = saved
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: another worker booting meanwhile reads a whole file or none.
    fd, tmp = tempfile.mkstemp(prefix=f".{cache_file.name}.", dir=cache_file.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, cache_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
