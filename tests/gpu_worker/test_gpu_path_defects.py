"""Defects of the GPU path, reproduced on the CPU with the real tiny pipelines and torch's real CUDA error types.

A forward hook raising `torch.cuda.OutOfMemoryError` is how a decode fails on a GPU; the pipelines and the worker
code around them are the real ones.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpu_worker.checkpoint import CheckpointError, DenoiseTap, Snapshot
from gpu_worker.errors import OutOfMemoryError
from gpu_worker.inference import cpu_generators, generate
from gpu_worker.models import LoadedModels
from gpu_worker.pipelines import load_pipeline
from gpu_worker.vae import decoding, make_vae_fp16_safe, needs_tiling
from producer.jobs import JobRequest

MakeJob = Callable[..., JobRequest]


def _oom_once(module: torch.nn.Module) -> list[int]:
    """Make `module`'s next forward fail as CUDA does when memory runs out; returns the list of calls seen."""
    calls: list[int] = []

    def hook(mod: torch.nn.Module, args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    module.register_forward_pre_hook(hook)
    return calls


def test_a_failed_sdxl_decode_leaves_the_vae_in_its_dtype(model_cache: Path, job: MakeJob) -> None:
    pipe = load_pipeline("tiny-sdxl", cache_dir=model_cache, device="cpu")
    pipe.vae.to(torch.float16)  # as on CUDA: a float16 VAE that diffusers upcasts to float32 for each decode
    calls = _oom_once(pipe.vae.decoder)
    request = job(model="tiny-sdxl")
    with pytest.raises(OutOfMemoryError):
        generate(pipe, request)
    assert pipe.vae.dtype == torch.float16  # diffusers alone leaves it float32 after the failure
    [image] = generate(pipe, request)  # and the next call works, upcasting again
    assert len(calls) == 2 and image.size == (64, 64) and pipe.vae.dtype == torch.float16


def test_the_fp16_safe_sdxl_vae_decodes_in_bfloat16_without_upcasting(
    model_cache: Path, family_pipes: Callable[[str], Any], job: MakeJob
) -> None:
    pipe = load_pipeline("tiny-sdxl", cache_dir=model_cache, device="cpu")
    pipe.vae.to(torch.float16)
    assert make_vae_fp16_safe(pipe) and not make_vae_fp16_safe(pipe)  # once
    seen: list[torch.dtype] = []
    pipe.vae.decoder.register_forward_hook(lambda mod, args, out: seen.append(next(mod.parameters()).dtype))
    request = job(model="tiny-sdxl")
    [image] = generate(pipe, request)
    assert seen == [torch.bfloat16] and pipe.vae.dtype == torch.bfloat16 and not pipe.vae.config.force_upcast
    [reference] = generate(family_pipes("tiny-sdxl"), request)  # the float32 VAE
    difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert difference.max() <= 8 and difference.mean() < 1.5


def test_a_load_that_runs_out_of_memory_frees_what_it_evicts(model_cache: Path) -> None:
    models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=2)
    try:
        with models.use("tiny") as (pipe, _):
            evicted = weakref.ref(pipe)
        del pipe
        attempts: list[bool] = []

        def load() -> str:
            attempts.append(evicted() is None)
            if len(attempts) == 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return "loaded"

        assert models._with_oom_retry(load) == "loaded"
        assert attempts == [False, True]  # by the retry, nothing holds the evicted pipeline any more
        assert models.loaded == []
    finally:
        models.close()


def test_a_load_that_does_not_fit_alone_says_so(model_cache: Path) -> None:
    models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=2)
    try:
        with models.use("tiny"):
            pass

        def load() -> None:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

        with pytest.raises(OutOfMemoryError, match="even alone"):
            models._with_oom_retry(load)
    finally:
        models.close()
    gc.collect()


def test_noise_comes_from_cpu_generators_on_every_device(tiny_pipe: Any, job: MakeJob) -> None:
    tap = DenoiseTap()
    generate(tiny_pipe, job(num_images=2, seed=40), tap=tap)
    assert [g.device.type for g in tap.generators] == ["cpu", "cpu"]
    expected = [torch.Generator().manual_seed(seed) for seed in (40, 41)]
    for mine, theirs in zip(cpu_generators(40, 2), expected, strict=True):
        assert torch.equal(torch.randn(4, 8, 8, generator=mine), torch.randn(4, 8, 8, generator=theirs))


def test_a_cuda_generator_state_is_a_checkpoint_error_not_a_runtime_error(tiny_pipe: Any, job: MakeJob) -> None:
    # What a CUDA (Philox) generator's get_state() returns: 8 bytes of seed and 8 of offset.
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    latents = torch.zeros(1, 4, 8, 8)
    snapshot = Snapshot(2, 4, type(tiny_pipe.scheduler).__name__, latents, {}, [cuda_state])
    with pytest.raises(CheckpointError, match="generator state"):
        generate(tiny_pipe, job(), tap=DenoiseTap(resume=snapshot))


def test_vae_tiling_only_above_four_times_the_native_area(tiny_pipe: Any) -> None:
    vae = tiny_pipe.vae  # SD 1.5's layout: native 512 px
    assert not needs_tiling(vae, 1024, 1024) and not needs_tiling(vae, 768, 512)
    assert needs_tiling(vae, 1032, 1024) and needs_tiling(vae, 1536, 1536)


def test_an_sd_decode_just_above_512_is_not_tiled(tiny_pipe: Any, job: MakeJob) -> None:
    vae = tiny_pipe.vae
    assert vae.use_tiling  # the default options allow tiling
    used: list[bool] = []
    hook = vae.decoder.register_forward_hook(lambda *args: used.append(vae.use_tiling))
    try:
        request = job(width=576, height=576, steps=1)
        [allowed] = generate(tiny_pipe, request)
        vae.disable_tiling()
        [untiled] = generate(tiny_pipe, request)
    finally:
        vae.enable_tiling()
        hook.remove()
    assert used == [False, False]  # one whole decode each, not tiles
    assert np.array_equal(np.asarray(allowed), np.asarray(untiled))
    with decoding(tiny_pipe, 1536, 1536):
        assert vae.use_tiling  # large enough to tile
    with decoding(tiny_pipe, 576, 576):
        assert not vae.use_tiling
    assert vae.use_tiling
