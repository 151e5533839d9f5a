"""The whole system against the same pipeline called in a plain loop, measured in the same run.

    python -m bench.e2e [--jobs 24] [--size 64] [--steps 20]

Runs on the embedded default (embedded Redis, local storage, one `sdq worker` process, the `tiny` model).
Prints one JSON line: system images/s, the in-process loop's images/s, their ratio (`efficiency`), submit latency
through the HTTP API, end-to-end latency per job, and where a job's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from producer import Client, JobRequest, JobStatus
from producer.embedded import EmbeddedRedis
from producer.localstack import LocalStack


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def baseline(cache: Path, request: JobRequest, count: int, threads: int) -> tuple[float, float]:
    """Images/s of `generate` in a plain loop in this process (after one warm-up call), and the load time."""
    import torch

    from gpu_worker.inference import generate
    from gpu_worker.pipelines import load_pipeline

    torch.set_num_threads(threads)

    started = time.perf_counter()
    pipe = load_pipeline("tiny", cache_dir=cache, device="cpu")
    load_s = time.perf_counter() - started
    generate(pipe, request)
    started = time.perf_counter()
    for _ in range(count):
        generate(pipe, request)
    return count / (time.perf_counter() - started), load_s


def system(data: Path, cache: Path, request: JobRequest, count: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "SDQ_DATA_DIR": str(data), "SDQ_MODEL_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    env["SDQ_TORCH_THREADS"] = str(threads)
    env.pop("SDQ_REDIS_URL", None)
    env.pop("SDQ_STORAGE_URL", None)
    with EmbeddedRedis(data), LocalStack(env, data / "logs") as stack, Client(stack.api_url) as client:
        started = time.perf_counter()
        stack.start_worker()
        warm = client.wait(client.submit(request).id, poll_interval_s=0.02)  # worker start + model load
        cold_start_s = time.perf_counter() - started
        assert warm.status is JobStatus.SUCCEEDED, warm.error

        submit_ms, ids = [], []
        for _ in range(count):
            t0 = time.perf_counter()
            ids.append(client.submit(request).id)
            submit_ms.append((time.perf_counter() - t0) * 1000)
        # Server-side timestamps give the figures, so polling slowly does not distort them (it only costs CPU).
        records = [client.wait(job_id, poll_interval_s=0.25) for job_id in ids]
        wall_s = max(r.finished_at for r in records if r.finished_at).timestamp() - records[0].created_at.timestamp()
        assert all(r.status is JobStatus.SUCCEEDED for r in records)
        latency = [(r.finished_at - r.created_at).total_seconds() for r in records if r.finished_at]

        def mean(name: str) -> float:
            return statistics.fmean(getattr(r.timings, name) or 0.0 for r in records)

        return {
            "images_per_s": count / wall_s,
            "cold_start_s": cold_start_s,
            "submit_p50_ms": _quantile(submit_ms, 0.5),
            "submit_p99_ms": _quantile(submit_ms, 0.99),
            "job_latency_p50_s": _quantile(latency, 0.5),
            "inference_s_mean": mean("inference_s"),
            "encode_s_mean": mean("encode_s"),
            "upload_s_mean": mean("upload_s"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    # The same torch thread count on both sides. One by default: on a 2-core machine the system also runs the API,
    # Redis and this client, and OpenMP threads spin-waiting against them would measure contention, not sdqueue.
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    request = JobRequest(prompt="a benchmark", width=args.size, height=args.size, steps=args.steps, seed=1)
    request = request.resolved("tiny")
    with tempfile.TemporaryDirectory(prefix="sdq-bench-") as tmp:
        root = Path(tmp)
        from gpu_worker.tiny import build_tiny_pipeline

        started = time.perf_counter()
        build_tiny_pipeline(root / "models" / "tiny")
        build_s = time.perf_counter() - started
        loop_images_per_s, load_s = baseline(root / "models", request, args.jobs, args.torch_threads)
        figures = system(root / "data", root / "models", request, args.jobs, args.torch_threads)
    result = {
        "bench": "e2e",
        "jobs": args.jobs,
        "size": args.size,
        "steps": args.steps,
        "torch_threads": args.torch_threads,
        "loop_images_per_s": round(loop_images_per_s, 3),
        "efficiency": round(figures["images_per_s"] / loop_images_per_s, 3),
        "tiny_build_s": round(build_s, 3),
        "tiny_load_s": round(load_s, 3),
        **{k: round(v, 3) for k, v in figures.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
