"""SD 1.5 and SDXL architectures on a CUDA GPU: plain diffusers fp16 against sdqueue's path, in the same run.

    python -m bench.gpu [--models sd15,sdxl] [--repeats 3] [--compile] [--check-configs]

No hub is reachable, so the UNet, VAE and text encoders are built from the published configs (written out below)
with seeded random weights: speed does not depend on the weights. The tokenizer is the built-in tiny model's, padded
to CLIP's 77 tokens like the real one. For each model: seconds per image at batch 1 and images/s at batch 8, for

* `plain`: the pipeline as diffusers builds it, in fp16 on the GPU, called directly;
* `sdqueue`: the same weights prepared by the worker (`gpu_worker.optimize`: SDPA, channels-last, VAE slicing and
  tiling, and with `--compile` torch.compile warmed up first) and called through the executor's `generate_batch`.

Prints one JSON line per model as it finishes; without CUDA it prints `{"bench": "gpu", "skipped": ...}` and exits
0. `--check-configs` builds the models on the meta device and prints their parameter counts (runs anywhere; no
weights allocated).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.jobs import Scheduler

log = logging.getLogger("bench.gpu")

# diffusers' published configs (runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0).
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
}
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "norm_num_groups": 32,
}
SD15_VAE = {**VAE, "sample_size": 512, "scaling_factor": 0.18215}
SDXL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14's text tower (SD 1.5, and SDXL's first encoder)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG: dict[str, Any] = {  # laion/CLIP-ViT-bigG-14's text tower (SDXL's second encoder)
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
#: (UNet, VAE, width = height, steps) per benchmarked architecture.
WORKLOADS = {"sd15": (SD15_UNET, SD15_VAE, 512, 50), "sdxl": (SDXL_UNET, SDXL_VAE, 1024, 30)}
#: Published parameter counts, checked by --check-configs.
UNET_PARAMS = {"sd15": 859_520_964, "sdxl": 2_567_463_684}


def build_pipeline(name: str, tokenizer_dir: Path, device: str, dtype: Any, seed: int = 0) -> Any:
    """The architecture `name` with seeded random weights, on `device` in `dtype` (built there: fast on a GPU)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet_config, vae_config, _, _ = WORKLOADS[name]
    torch.manual_seed(seed)
    with torch.device(device):
        unet = _untyped(diffusers.UNet2DConditionModel).from_config(unet_config).to(dtype)
        vae = _untyped(diffusers.AutoencoderKL).from_config(vae_config).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L)).to(dtype)
        second = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)).to(dtype) if name == "sdxl" else None
    if device == "meta":
        return unet
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.model_max_length = 77  # CLIP's real length: the text encoder and cross-attention see 77 tokens
    scheduler = _untyped(diffusers.PNDMScheduler)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    )
    pipe: Any
    if second is None:
        pipe = _untyped(diffusers.StableDiffusionPipeline)(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipe = _untyped(diffusers.StableDiffusionXLPipeline)(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=second,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _untyped(thing: Any) -> Any:
    """diffusers is untyped: its classes pass through as `Any`."""
    return thing


def check_configs() -> dict[str, Any]:
    """Parameter counts of the UNets built on the meta device, against the published ones."""
    counts = {
        name: sum(p.numel() for p in build_pipeline(name, Path(), "meta", None).parameters()) for name in WORKLOADS
    }
    return {
        "bench": "gpu",
        "check_configs": {name: {"unet_params": n, "published": UNET_PARAMS[name]} for name, n in counts.items()},
        "match": all(counts[name] == UNET_PARAMS[name] for name in counts),
    }


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time(call: Any, repeats: int, device: str) -> float:
    """Median seconds of `call()` over `repeats` runs, after one warm-up run."""
    call()
    seconds = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        call()
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds)[len(seconds) // 2]


@dataclass(frozen=True)
class Workload:
    """What one measurement renders, and where."""

    side: int
    steps: int
    big_batch: int = 8
    device: str = "cuda"


def measure(pipe: Any, work: Workload, path: str, repeats: int) -> dict[str, float]:
    """Seconds per image at batch 1 and images/s at the big batch, calling `pipe` the way `path` does."""
    import torch

    from gpu_worker.inference import generate_batch
    from producer.jobs import JobRequest

    side, steps = work.side, work.steps

    def plain(batch: int) -> Any:
        generators = [torch.Generator(work.device).manual_seed(n) for n in range(batch)]
        return lambda: pipe(
            prompt=["a photo of a lighthouse at dusk"] * batch,
            width=side,
            height=side,
            num_inference_steps=steps,
            generator=generators,
        )

    def sdqueue(batch: int) -> Any:
        requests = [
            JobRequest(prompt="a photo of a lighthouse at dusk", width=side, height=side, steps=steps, seed=n)
            for n in range(batch)
        ]
        return lambda: generate_batch(pipe, requests)

    make = plain if path == "plain" else sdqueue
    batch_1_s = _time(make(1), repeats, work.device)
    big_s = _time(make(work.big_batch), repeats, work.device)
    return {
        "s_per_image_batch_1": round(batch_1_s, 4),
        f"images_per_s_batch_{work.big_batch}": round(work.big_batch / big_s, 3),
    }


def run(
    models: list[str], repeats: int, compile_unet: bool, *, smoke: bool = False, emit: Any = None
) -> dict[str, Any]:
    """Measure `models`; `smoke` runs the same code on the CPU at 64², 2 steps, batch 2 (checks, not figures).

    `emit(line)` is called with each model's JSON line as soon as it is measured (a timeout loses only the model
    being measured); the return value holds them all. TF32 is left as torch has it (off for matmuls), as the
    worker does: the figures are the worker's."""
    import torch

    from gpu_worker.optimize import PipelineOptions, compile_and_warm_up, optimize
    from gpu_worker.tiny import build_tiny_pipeline

    device, dtype = ("cpu", torch.float32) if smoke else ("cuda", torch.float16)
    header: dict[str, Any] = {
        "bench": "gpu",
        "device": "cpu (smoke test: no figures)" if smoke else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "compile": compile_unet,
    }
    results = dict(header)
    with tempfile.TemporaryDirectory(prefix="sdq-bench-gpu-") as tmp:
        tiny = Path(tmp) / "tiny"
        build_tiny_pipeline(tiny)
        for name in models:
            _, _, side, steps = WORKLOADS[name]
            work = Workload(64, 2, 2, "cpu") if smoke else Workload(side, steps)
            log.info("%s: building (%d², %d steps)", name, work.side, work.steps)
            pipe = build_pipeline(name, tiny / "tokenizer", device, dtype)
            plain = measure(pipe, work, "plain", repeats)
            log.info("%s plain: %s", name, plain)
            options = PipelineOptions(
                compile=compile_unet,
                compile_sizes=((work.side, work.side),),
                compile_schedulers=(Scheduler.DEFAULT,),
                batch_max=work.big_batch,
            )
            optimize(pipe, torch.device(device), options)
            compile_s = compile_and_warm_up(pipe, options, model=f"bench-{name}") if compile_unet else 0.0
            optimized = measure(pipe, work, "sdqueue", repeats)
            log.info("%s sdqueue: %s", name, optimized)
            big = f"images_per_s_batch_{work.big_batch}"
            results[name] = {
                "size": work.side,
                "steps": work.steps,
                "plain": plain,
                "sdqueue": optimized,
                "speedup_batch_1": round(plain["s_per_image_batch_1"] / optimized["s_per_image_batch_1"], 3),
                f"speedup_batch_{work.big_batch}": round(optimized[big] / plain[big], 3),
                "compile_s": round(compile_s, 1),
            }
            if device == "cuda":
                results[name]["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            if emit is not None:
                emit({**header, "model": name, **results[name]})
            del pipe
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet on sdqueue's path")
    parser.add_argument("--check-configs", action="store_true", help="parameter counts only (no GPU needed)")
    parser.add_argument("--smoke", action="store_true", help="run the code on the CPU, tiny sizes (no figures)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.check_configs:
        print(json.dumps(check_configs()))
        return
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        print(json.dumps({"bench": "gpu", "skipped": "no CUDA device (this benchmark only means something on a GPU)"}))
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(WORKLOADS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: NaNs in the decoded images are expected, and harmless
        run(models, args.repeats, args.compile, smoke=args.smoke, emit=lambda line: print(json.dumps(line), flush=True))


if __name__ == "__main__":
    main()
