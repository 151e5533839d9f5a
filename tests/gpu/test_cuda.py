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


def test_a_batch_on_cuda_matches_each_job_alone_and_the_gpu_is_reported(model_cache: Path) -> None:
    import numpy as np

    from gpu_worker.executor import GpuExecutor
    from gpu_worker.gpu_stats import GpuStatsReader
    from gpu_worker.models import LoadedModels
    from producer.jobs import new_job_id

    models = LoadedModels(cache_dir=model_cache, device="cuda", capacity=1)
    requests = [JobRequest(prompt=f"a cat {n}", width=128, height=96, steps=4, seed=n).resolved("tiny") for n in (1, 9)]
    gpu = GpuExecutor(models, max_images=4, wait_ms=0)
    jobs = [gpu.submit(new_job_id(), r, lambda done, total: None) for r in requests]
    gpu.start()
    try:
        batched = [job.future.result(timeout=300) for job in jobs]
    finally:
        gpu.shutdown()
    assert gpu.pipeline_calls == 1 and {r.cohort_size for r in batched} == {2}
    with models.use("tiny") as (pipe, _):
        for result, request in zip(batched, requests, strict=True):
            alone = np.asarray(generate(pipe, request)[0], dtype=np.int16)
            # fp16 kernels may pick other algorithms for another batch size: allow a few levels, no more.
            assert np.abs(np.asarray(result.images[0], dtype=np.int16) - alone).max() <= 8

    reader = GpuStatsReader()
    stats = reader.read()
    assert reader.available and stats, reader.reason
    assert all(s.memory_total_bytes > s.memory_used_bytes > 0 and 0 <= s.utilization_ratio <= 1 for s in stats)
