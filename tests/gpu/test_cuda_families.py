"""Every model family on CUDA in its dtype: SD/SDXL float16 (SDXL's VAE bfloat16, never upcast), SD 3 and Flux
bfloat16, no NaNs, bit-exact resume on the GPU, and the same initial noise as on the CPU. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpu_worker.checkpoint import DenoiseTap, decode_snapshot, encode_snapshot
from gpu_worker.errors import JobInterruptedError
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from producer.jobs import JobRequest

pytestmark = pytest.mark.gpu

DTYPES = {"tiny": "float16", "tiny-sdxl": "float16", "tiny-sd3": "bfloat16", "tiny-flux": "bfloat16"}


def _interrupt(done: int, total: int) -> None:
    if done == 3:
        raise JobInterruptedError("spot notice")


@pytest.mark.parametrize("model", list(DTYPES))
def test_each_family_runs_in_its_dtype_and_resumes_bit_exactly(model_cache: Path, model: str) -> None:
    import torch

    request = JobRequest(prompt="a cat", model=model, width=64, height=64, steps=6, seed=7, num_images=2)
    models = LoadedModels(cache_dir=model_cache, device="cuda")
    try:
        with models.use(model) as (pipe, _):
            whole = generate(pipe, request)
            assert [image.info["sdqueue_dtype"] for image in whole] == [DTYPES[model]] * 2
            if model == "tiny-sdxl":
                assert pipe.vae.dtype == torch.bfloat16 and not pipe.vae.config.force_upcast
            assert all(np.asarray(image).std() > 0 for image in whole)  # NaN latents decode to flat black
            with pytest.raises(JobInterruptedError) as caught:
                generate(pipe, request, on_step=_interrupt, tap=DenoiseTap())
            snapshot = decode_snapshot(encode_snapshot(caught.value.snapshot))  # type: ignore[arg-type]
            resumed = generate(pipe, request, tap=DenoiseTap(resume=snapshot))
            assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(whole, resumed, strict=True))
    finally:
        models.close()


def test_a_checkpoint_from_the_gpu_resumes_on_the_cpu(model_cache: Path) -> None:
    """CPU generators: the hand-off keeps the noise, across device kinds (float noise apart)."""
    request = JobRequest(prompt="a cat", model="tiny-flux", width=64, height=64, steps=6, seed=7)
    gpu = LoadedModels(cache_dir=model_cache, device="cuda")
    try:
        with gpu.use("tiny-flux") as (pipe, _), pytest.raises(JobInterruptedError) as caught:
            generate(pipe, request, on_step=_interrupt, tap=DenoiseTap())
    finally:
        gpu.close()
    snapshot = decode_snapshot(encode_snapshot(caught.value.snapshot))  # type: ignore[arg-type]
    cpu = LoadedModels(cache_dir=model_cache, device="cpu")
    try:
        with cpu.use("tiny-flux") as (pipe, _):
            whole = np.asarray(generate(pipe, request)[0], dtype=np.int16)
            resumed = np.asarray(generate(pipe, request, tap=DenoiseTap(resume=snapshot))[0], dtype=np.int16)
    finally:
        cpu.close()
    assert np.abs(whole - resumed).mean() < 4  # bfloat16 GPU steps then float32 CPU steps: close, not equal
