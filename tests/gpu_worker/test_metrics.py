"""The worker's Prometheus endpoint over real HTTP, with figures from real jobs on the tiny pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpu_worker.executor import GpuExecutor
from gpu_worker.gpu_stats import GpuStatsReader
from gpu_worker.metrics import MetricsExporter, WorkerMetrics
from gpu_worker.models import LoadedModels
from producer.jobs import JobRequest, JobStatus, Timings, new_job_id


def _scrape(port: int) -> dict[str, float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_the_endpoint_serves_batches_jobs_phases_busy_time_and_gpu_state(
    model_cache: Path, job: Callable[..., JobRequest]
) -> None:
    metrics = WorkerMetrics()
    exporter = MetricsExporter(metrics, port=0, host="127.0.0.1")
    port = exporter.start()
    try:
        with GpuExecutor(LoadedModels(cache_dir=model_cache, device="cpu", capacity=1), metrics=metrics) as gpu:
            jobs = [gpu.submit(new_job_id(), job(seed=s), lambda d, t: None) for s in (1, 2, 3)]
            results = [j.future.result(timeout=120) for j in jobs]
        metrics.record_job(JobStatus.SUCCEEDED, Timings(queue_wait_s=0.01, inference_s=0.2, upload_s=0.003), images=1)
        metrics.record_job(JobStatus.FAILED, Timings())
        samples = _scrape(port)
    finally:
        exporter.stop()

    calls = samples["sdq_pipeline_calls_total"]
    assert calls >= 1 and samples["sdq_batch_images_count"] == calls
    assert samples["sdq_batch_images_sum"] == 3  # every image went through a pipeline call exactly once
    assert samples["sdq_busy_seconds_total"] >= sum(r.inference_s for r in {r.started_at: r for r in results}.values())
    assert 0 < samples["sdq_busy_fraction"] <= 1
    assert samples["sdq_jobs_total{status=succeeded}"] == 1 and samples["sdq_jobs_total{status=failed}"] == 1
    assert samples["sdq_images_total"] == 1
    assert samples["sdq_job_phase_seconds_count{phase=inference}"] == 1
    assert samples["sdq_job_phase_seconds_sum{phase=upload}"] == 0.003
    assert "sdq_job_phase_seconds_count{phase=encode}" not in samples  # a phase that never happened is not a zero

    available = GpuStatsReader().available
    assert samples["sdq_gpu_available"] == (1.0 if available else 0.0)
    gpu_samples = [name for name in samples if name.startswith("sdq_gpu_memory_total_bytes")]
    assert bool(gpu_samples) == available  # no GPU: reported as such, and no made-up device figures


def test_without_a_gpu_the_reader_says_why_instead_of_raising() -> None:
    reader = GpuStatsReader()
    if reader.available:
        stats = reader.read()
        assert stats and all(s.memory_total_bytes > 0 and 0 <= s.utilization_ratio <= 1 for s in stats)
    else:
        assert reader.read() == [] and reader.reason


def test_stopping_the_exporter_frees_its_port() -> None:
    exporter = MetricsExporter(WorkerMetrics(), port=0, host="127.0.0.1")
    port = exporter.start()
    exporter.stop()
    exporter.stop()  # idempotent
    again = MetricsExporter(WorkerMetrics(), port=port, host="127.0.0.1")
    assert again.start() == port
    again.stop()
