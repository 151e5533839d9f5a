"""The whole system (API → Redis → worker → S3-compatible server) against plain loops, measured in the same run.

    python -m bench.worker [--jobs 192] [--rounds 3] [--size 64] [--steps 20] [--batch-sizes 1,4,8] [--batch 4]
                           [--torch-threads 1] [--mode text|img2img|inpaint|controlnet]

On the CPU with the `tiny` model: an `sdq api` and `sdq worker` processes on an embedded Redis, uploading to a
moto S3 server (a real HTTP S3 endpoint; pass --seaweedfs to use SeaweedFS instead). At each batch size one worker
starts (its cold start is timed), then `--rounds` rounds alternate with plain-loop baselines: loop, round, loop,
round, …, loop. A round submits `--jobs / --rounds` jobs at once through the batch API and waits for them all.
Shared machines drift by 10 % and more within a minute, so each round is compared with the loops right before and
after it. Prints one JSON line:

* `images_per_s`: the system at `--batch` (SDQ_BATCH_MAX): images over the rounds' summed wall time, each round
  from its first job's creation to its last one's end (server-side timestamps: the client's polling does not count);
* `efficiency`: the median over rounds of the round's images/s ÷ the mean of the two loops around it, where the
  loop is the worker's own pipeline called in this process with the same batch size, the same pipeline preparation
  and the same torch thread count (`efficiency_rounds`: every round's ratio; `efficiency_total`: all rounds' images/s
  ÷ all loops' images/s);
* `speedup_vs_naive`: that ÷ the loop a user writes by hand (one image → PNG → boto3 upload → next);
* `batching`: system and loop images/s at each of `--batch-sizes`, and the gain of each over batch 1;
* `switch_hit_s` / `switch_miss_s`: time to get the other of two alternating models when both stay loaded (hit)
  and when only one fits (miss: loaded again from the warm NVMe cache);
* `cold_start_s`: `sdq worker` process start → first image uploaded, cache warm; `cold_start_import_floor_s` is a
  bare interpreter importing the worker and diffusers' pipeline class, the part of it no worker can avoid;
* the mean per-job timings and the worker's busy fraction (scraped from its Prometheus endpoint);
* with `--mode img2img|inpaint|controlnet` (`bench.image_modes`), every job carries that mode's inputs (a photo as a
  data URL; a mask; a ControlNet unit with Canny on the worker), the loop runs the same mode on the same prepared
  inputs, and `input_*_ms` give the cost of resolving one job's inputs (fetch the upload, decode and normalize,
  store under inputs/<job>/; and a later attempt's read-back) against the same storage, with
  `input_share_of_job`: the first attempt's cost over itself plus the job's mean inference time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench import image_modes
from producer import Client, JobRecord, JobRequest, JobStatus
from producer.embedded import EmbeddedRedis
from producer.localstack import LocalStack, free_port

log = logging.getLogger("bench.worker")
BUCKET = "sdq-bench"


def _request(args: argparse.Namespace, seed: int, model: str | None = None) -> JobRequest:
    model = model or args.model_ref
    fields = image_modes.request_fields(args.mode, args.size, model) if model == args.model_ref else {}
    return JobRequest(
        prompt="a benchmark", model=model, width=args.size, height=args.size, steps=args.steps, seed=seed, **fields
    ).resolved(model)


def _models(cache: Path, capacity: int, device: str = "cpu") -> Any:
    """The worker's own model set, prepared exactly as a worker with default settings prepares it."""
    from gpu_worker.models import LoadedModels
    from gpu_worker.settings import WorkerSettings

    settings = WorkerSettings(model_cache_dir=cache, max_loaded_models=capacity)
    return LoadedModels.from_settings(settings, device=device)


def loop_images_per_s(cache: Path, args: argparse.Namespace, batch: int, images: int) -> float:
    """The worker's pipeline called in a plain loop, `batch` images per call, about `images` in all (after one
    warm-up call)."""
    from gpu_worker.inference import generate_batch

    inputs = image_modes.loop_inputs(args.mode, args.size, args.model_ref)
    rows = [inputs] * batch if inputs is not None else None
    with _models(cache, 1, args.device).use(args.model_ref) as (pipe, _):
        calls = max(1, images // batch)
        generate_batch(pipe, [_request(args, seed) for seed in range(batch)], inputs=rows)
        started = time.perf_counter()
        for call in range(calls):
            generate_batch(pipe, [_request(args, call * batch + n) for n in range(batch)], inputs=rows)
        return float(calls * batch / (time.perf_counter() - started))


def naive_images_per_s(cache: Path, args: argparse.Namespace, s3: Any, images: int) -> float:
    """What a user writes by hand: one image, PNG, boto3 upload, next (same pipeline object, warm)."""
    import torch

    client = s3.client() if s3 is not None else None
    with _models(cache, 1, args.device).use(args.model_ref) as (pipe, _):

        def one(seed: int) -> None:
            image = pipe(
                "a benchmark",
                width=args.size,
                height=args.size,
                num_inference_steps=args.steps,
                generator=torch.Generator(args.device).manual_seed(seed),
            ).images[0]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            if client is None:  # local storage: the upload is a file write
                (cache.parent / "naive").mkdir(exist_ok=True)
                (cache.parent / "naive" / f"{seed}.png").write_bytes(buffer.getvalue())
            else:
                client.put_object(
                    Bucket=BUCKET, Key=f"naive/{seed}.png", Body=buffer.getvalue(), ContentType="image/png"
                )

        one(0)
        started = time.perf_counter()
        for seed in range(images):
            one(seed)
        return float(images / (time.perf_counter() - started))


def model_switch(cache: Path, args: argparse.Namespace, other: str) -> dict[str, float]:
    """Seconds to get the other of two alternating models: both kept loaded (hit) or only one (miss)."""
    figures: dict[str, float] = {}
    for name, capacity in (("hit", 2), ("miss", 1)):
        models = _models(cache, capacity)
        for model in ("tiny", other):  # first loads: not switches
            with models.use(model):
                pass
        seconds = []
        for model in ("tiny", other) * 3:
            started = time.perf_counter()
            with models.use(model):
                seconds.append(time.perf_counter() - started)
        figures[f"switch_{name}_s"] = statistics.median(seconds)
        models.close()
    return figures


def import_floor_s(runs: int = 3) -> float:
    """Median wall time of a fresh interpreter that only imports what a worker must before its first image."""
    code = "import gpu_worker.worker, gpu_worker.pipelines; from diffusers import AutoPipelineForText2Image"
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def _metric(url: str, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    with contextlib.suppress(httpx.HTTPError):
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
    return None


def system_run(stack: LocalStack, client: Client, cache: Path, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """One worker at SDQ_BATCH_MAX=`batch`: cold start with a first job, then `--rounds` rounds between plain-loop
    baselines (see the module's doc); the worker is stopped after."""
    metrics_port = free_port()
    per_round = max(batch, args.jobs // args.rounds)
    warm_up = client.submit(_request(args, 10_000))
    spawned = time.time()
    worker = stack.start_worker(
        SDQ_BATCH_MAX=str(batch),
        SDQ_WORKER_THREADS=str(2 * batch),  # one batch denoising while the previous one encodes and uploads
        SDQ_METRICS_PORT=str(metrics_port),
        SDQ_METRICS_HOST="127.0.0.1",
    )
    try:
        first = client.wait(warm_up.id, poll_interval_s=0.02, timeout_s=600)
        assert first.status is JobStatus.SUCCEEDED and first.finished_at, first.error
        cold_start_s = first.finished_at.timestamp() - spawned
        loops = [loop_images_per_s(cache, args, batch, per_round)]
        rounds: list[list[JobRecord]] = []
        for number in range(args.rounds):
            seeds = range(number * per_round, (number + 1) * per_round)
            created = client.submit_batch([_request(args, seed) for seed in seeds])
            records = _wait_all(client, created.job_ids, timeout_s=600)
            failed = [r.error for r in records if r.status is not JobStatus.SUCCEEDED]
            assert not failed, failed
            rounds.append(records)
            loops.append(loop_images_per_s(cache, args, batch, per_round))
        busy = _metric(f"http://127.0.0.1:{metrics_port}/metrics", "sdq_busy_fraction")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    rates = [_images(records) / _wall_s(records) for records in rounds]
    ratios = [rate / ((loops[n] + loops[n + 1]) / 2) for n, rate in enumerate(rates)]
    system_rate = sum(_images(r) for r in rounds) / sum(_wall_s(r) for r in rounds)
    loop_rate = statistics.fmean(loops)
    log.info("batch %d: rounds %s images/s, loops %s", batch, _rounded(rates), _rounded(loops))
    return {
        **_figures([record for records in rounds for record in records], cold_start_s, busy),
        "images_per_s": system_rate,
        "loop_images_per_s": loop_rate,
        "efficiency": statistics.median(ratios),
        "efficiency_total": system_rate / loop_rate,
        "efficiency_rounds": _rounded(ratios),
    }


def _images(records: list[JobRecord]) -> int:
    return sum(len(r.outputs) for r in records)


def _wall_s(records: list[JobRecord]) -> float:
    """First creation to last end, by the server's clock."""
    ends = [r.finished_at.timestamp() for r in records if r.finished_at]
    return max(ends) - min(r.created_at.timestamp() for r in records)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def _wait_all(client: Client, ids: list[str], *, timeout_s: float) -> list[JobRecord]:
    """Every job's final record, polling gently: one GET every half second for the oldest unfinished job, so the
    client loads the machine it measures as little as possible (the figures come from server-side timestamps)."""
    done: dict[str, JobRecord] = {}
    deadline = time.monotonic() + timeout_s
    for job_id in ids:
        while True:
            record = client.get(job_id)
            if record.status.is_terminal:
                done[job_id] = record
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status} after {timeout_s:g} s")
            time.sleep(0.5)
    return [done[job_id] for job_id in ids]


def _figures(records: list[JobRecord], cold_start_s: float, busy: float | None) -> dict[str, float]:
    def mean(name: str) -> float:
        return statistics.fmean(getattr(r.timings, name) or 0.0 for r in records)

    figures = {
        "cold_start_s": cold_start_s,
        "mean_batch_size": mean("batch_size"),
        "queue_wait_s_mean": mean("queue_wait_s"),
        "inference_s_mean": mean("inference_s"),
        "encode_s_mean": mean("encode_s"),
        "upload_s_mean": mean("upload_s"),
    }
    if busy is not None:
        figures["busy_fraction_since_start"] = busy
    return figures


@contextlib.contextmanager
def s3_server(storage: str) -> Iterator[Any]:
    """An S3-compatible server on loopback, with the benchmark's bucket (None for `local` storage)."""
    if storage == "local":
        yield None
        return
    seaweedfs = storage == "seaweedfs"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ is not installed; run from the repo
    from tests import emulators

    with emulators.seaweedfs() if seaweedfs else emulators.moto_s3() as server:
        server.create_bucket(BUCKET)
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=192, help="jobs (one image each) per batch size, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per batch size, each between two baselines")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="SDQ_BATCH_MAX of the headline figures")
    parser.add_argument("--batch-sizes", default="1,4,8", help="batch sizes of the batching-gain figures")
    # The same torch thread count everywhere. One by default: on a 2-core machine the system also runs the API,
    # Redis, S3 and this client, and OpenMP threads spin-waiting against them would measure contention.
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seaweedfs", action="store_true", help="SeaweedFS instead of moto as the S3 server")
    parser.add_argument(
        "--storage", choices=["moto", "seaweedfs", "local"], default=None, help="where outputs go (default: moto)"
    )
    parser.add_argument("--model", default="tiny", help="tiny, or sd15: SD 1.5's architecture, random weights")
    parser.add_argument("--model-dir", type=Path, help="where --model sd15 is built (kept for later runs)")
    parser.add_argument("--device", default="cpu", help="SDQ_DEVICE of the worker and the loops")
    parser.add_argument("--skip-switch", action="store_true", help="do not measure model switches")
    parser.add_argument("--mode", choices=image_modes.MODES, default="text", help="what every job starts from")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    for chatty in ("httpx", "werkzeug", "botocore", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")} | {args.batch})

    import torch

    torch.set_num_threads(args.torch_threads)
    from gpu_worker.tiny import build_tiny_pipeline

    args.storage = args.storage or ("seaweedfs" if args.seaweedfs else "moto")
    with tempfile.TemporaryDirectory(prefix="sdq-bench-") as tmp, s3_server(args.storage) as s3:
        root = Path(tmp)
        cache = root / "models"
        build_tiny_pipeline(cache / "tiny")
        args.model_ref = "tiny"
        if args.model == "sd15":
            from bench.load import build_random_pipeline

            args.model_ref = str(build_random_pipeline("sd15", (args.model_dir or root) / "sd15"))
        other = root / "other-model"
        shutil.copytree(cache / "tiny", other)

        switch = {} if args.skip_switch else model_switch(cache, args, str(other))

        env = {
            **os.environ,
            **(s3.env if s3 is not None else {}),
            "SDQ_DATA_DIR": str(root / "data"),
            "SDQ_MODEL_CACHE_DIR": str(cache),
            **({"SDQ_STORAGE_URL": s3.url(BUCKET, "out")} if s3 is not None else {}),
            "SDQ_TORCH_THREADS": str(args.torch_threads),
            "SDQ_PRELOAD_MODELS": args.model_ref,
            "SDQ_DEVICE": args.device,
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("SDQ_REDIS_URL", None)
        system: dict[int, dict[str, Any]] = {}
        naive = 0.0
        with EmbeddedRedis(root / "data"), LocalStack(env, root / "logs") as stack, Client(stack.api_url) as client:
            for b in sizes:
                log.info("system at batch %d", b)
                system[b] = system_run(stack, client, cache, args, b)
                if b == args.batch and args.mode == "text":  # the hand-written loop is text-to-image only
                    naive = naive_images_per_s(cache, args, s3, max(1, args.jobs // args.rounds))
            inputs = image_modes.stored_resolution_cost(
                args.mode,
                _request(args, 1),
                s3,
                root / "bench-inputs",
                bucket=BUCKET,
                head_inference_s=system[args.batch]["inference_s_mean"],
            )

    head = system[args.batch]
    floor = import_floor_s()
    result = {
        "bench": "worker",
        "jobs": args.jobs,
        "rounds": args.rounds,
        "size": args.size,
        "steps": args.steps,
        "batch": args.batch,
        "torch_threads": args.torch_threads,
        "s3": args.storage,
        "model": args.model,
        "device": args.device,
        "mode": args.mode,
        "images_per_s": round(head["images_per_s"], 3),
        "loop_images_per_s": round(head["loop_images_per_s"], 3),
        "efficiency": round(head["efficiency"], 3),
        "efficiency_total": round(head["efficiency_total"], 3),
        "efficiency_rounds": head["efficiency_rounds"],
        "naive_images_per_s": round(naive, 3) if naive else None,
        "speedup_vs_naive": round(head["images_per_s"] / naive, 3) if naive else None,
        **{k: round(v, 3) for k, v in inputs.items()},
        "cold_start_s": round(head["cold_start_s"], 3),
        # The part of a cold start no worker can avoid: a bare interpreter importing the worker and the pipeline.
        "cold_start_import_floor_s": round(floor, 3),
        "cold_start_over_floor_s": round(head["cold_start_s"] - floor, 3),
        "batching": {
            str(b): {
                "system_images_per_s": round(system[b]["images_per_s"], 3),
                "loop_images_per_s": round(system[b]["loop_images_per_s"], 3),
                "efficiency": round(system[b]["efficiency"], 3),
                "efficiency_rounds": system[b]["efficiency_rounds"],
                "system_gain_vs_batch_1": round(system[b]["images_per_s"] / system[sizes[0]]["images_per_s"], 3),
                "mean_batch_size": round(system[b]["mean_batch_size"], 2),
            }
            for b in sizes
        },
        **{k: round(v, 4) for k, v in switch.items()},
        **{k: round(v, 4) for k, v in head.items() if isinstance(v, float) and k not in _HEADLINE},
    }
    print(json.dumps(result))


#: Figures of the headline batch size already printed under their own names.
_HEADLINE = {"images_per_s", "cold_start_s", "loop_images_per_s", "efficiency", "efficiency_total"}


if __name__ == "__main__":
    main()
