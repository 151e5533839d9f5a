"""The worker's CUDA path: fp16 weights on the GPU, seeded generators on the device. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_worker.encode import encode_image
from gpu_worker.inference import generate
from gpu_worker.pipelines import load_pipeline
from producer.jobs import JobRequest, OutputFormat

pytestmark = pytest.mark.gpu


def test_the_tiny_model_runs_in_fp16_on_cuda_and_is_reproducible(model_cache: Path) -> None:
    import torch

    pipe = load_pipeline("tiny", cache_dir=model_cache, device="cuda", local_files_only=True)
    assert pipe.unet.dtype == torch.float16 and pipe.device.type == "cuda"
    request = JobRequest(prompt="a cat", width=128, height=96, steps=4, seed=5, num_images=2).resolved("tiny")
    first, second = generate(pipe, request), generate(pipe, request)
    assert [image.size for image in first] == [(128, 96), (128, 96)]
    assert [encode_image(i, OutputFormat.PNG) for i in first] == [encode_image(i, OutputFormat.PNG) for i in second]


def test_a_real_cuda_out_of_memory_error_is_the_type_the_worker_translates() -> None:
    import torch

    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # a petabyte
    torch.cuda.empty_cache()
