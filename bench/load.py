"""Loading SD 1.5- and SDXL-size pipelines from the model cache: seconds against a read floor, peak RSS against
the weights, measured in the same run.

    python -m bench.load [--models sd15,sdxl] [--cache-dir DIR] [--repeats 2] [--device cpu]

No hub is reachable, so each model is built once from the published configs (`bench.gpu`'s) with seeded random
weights, saved as fp16 safetensors in the layout the Hub ships (`diffusion_pytorch_model.fp16.safetensors`, ...)
under `--cache-dir` (default: a folder in the system's temp dir, kept for the next run; building SDXL takes about
a minute). Then, per model, alternating `--repeats` times:

* `read_floor_s`: the same weight files read sequentially into freshly allocated memory, from the page cache
  (the floor of any load: every byte has to be read once);
* `load_s`: a fresh interpreter calls `gpu_worker.pipelines.load_from_directory` (the worker's own path, in fp16,
  onto `--device`), then reads every weight once, so that a lazily mapped load pays its page faults here too;
  the interpreter's imports (the pipeline's classes included) are not counted (`import_s` reports them);
* `plain_load_s`: the same, loaded the way diffusers' docs show (`from_pretrained`, then `.to(device)`);
* `peak_rss_over_weights`: that interpreter's peak resident memory (VmHWM) less its resident memory after the
  imports, ÷ the bytes of weights the load reads.

Targets: `load_s` ≤ 2 × `read_floor_s`, `peak_rss_over_weights` ≤ 1.3. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.load")
_DONE = ".bench-load-complete"


def _diffusers_components(name: str) -> dict[str, tuple[str, str, Any]]:
    """(library, class, config) per weighted component of the architecture `name`."""
    from bench.gpu import CLIP_BIGG, CLIP_L, WORKLOADS

    unet, vae, _, _ = WORKLOADS[name]
    components = {
        "unet": ("diffusers", "UNet2DConditionModel", unet),
        "vae": ("diffusers", "AutoencoderKL", vae),
        "text_encoder": ("transformers", "CLIPTextModel", CLIP_L),
    }
    if name == "sdxl":
        components["text_encoder_2"] = ("transformers", "CLIPTextModelWithProjection", CLIP_BIGG)
    return components


def build_random_pipeline(name: str, path: Path, *, seed: int = 0) -> Path:
    """Write the architecture `name` with seeded random fp16 weights into `path` (once; later calls reuse it)."""
    if (path / _DONE).is_file():
        return path
    import diffusers
    import torch
    import transformers

    from gpu_worker.tiny import build_tiny_pipeline

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sdq-bench-load-") as tmp:
        build_tiny_pipeline(Path(tmp) / "tiny")  # tokenizer and scheduler: the tiny model's (no weights in them)
        shutil.copytree(Path(tmp) / "tiny" / "tokenizer", path / "tokenizer")
        shutil.copytree(Path(tmp) / "tiny" / "scheduler", path / "scheduler")
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if name == "sdxl" else "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    if name == "sdxl":
        shutil.copytree(path / "tokenizer", path / "tokenizer_2")
        index |= {"tokenizer_2": ["transformers", "CLIPTokenizer"], "force_zeros_for_empty_prompt": True}
    else:
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    generator = torch.Generator().manual_seed(seed)
    for component, (library, class_name, config) in _diffusers_components(name).items():
        index[component] = [library, class_name]
        folder = path / component
        with torch.device("meta"):
            if library == "diffusers":
                model = getattr(diffusers, class_name).from_config(config)
                model.save_config(folder)
                filename = "diffusion_pytorch_model.fp16.safetensors"
            else:
                text_config = transformers.CLIPTextConfig(**config)
                model = getattr(transformers, class_name)(text_config)
                text_config.architectures = [class_name]
                text_config.save_pretrained(folder)
                filename = "model.fp16.safetensors"
        shapes = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
        write_random_safetensors(folder / filename, shapes, generator)
    (path / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    (path / _DONE).write_text("", encoding="utf-8")
    log.info("built %s in %.0f s", name, time.perf_counter() - started)
    return path


def write_random_safetensors(file: Path, shapes: dict[str, tuple[int, ...]], generator: Any) -> None:
    """A safetensors file of fp16 tensors drawn from N(0, 0.02²), written one tensor at a time (never all in RAM)."""
    import torch

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in sorted(shapes):
        size = 2 * _numel(shapes[key])
        header[key] = {"dtype": "F16", "shape": list(shapes[key]), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(file, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for key in sorted(shapes):
            tensor = torch.empty(shapes[key], dtype=torch.float16).normal_(0.0, 0.02, generator=generator)
            out.write(tensor.numpy().tobytes())


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def weight_files(path: Path) -> list[Path]:
    """The safetensors files a fp16 load of `path` reads."""
    from gpu_worker.sources import read_index, select_hub_files

    files = [file.relative_to(path).as_posix() for file in path.glob("*/*.safetensors")]
    chosen = select_hub_files(files, index=read_index(path, str(path)), fp16=True)
    return [path / name for name in chosen if name.endswith(".safetensors")]


def read_floor_s(files: list[Path], *, prefaulted: bool = False) -> float:
    """Seconds to read `files` one after the other into freshly mapped memory (each page faulted in once, by the
    read itself, as any load into RAM must). `prefaulted`: into one buffer whose pages are mapped already, the
    floor where page faults cost nothing (in a VM they cost most of the time)."""
    largest = max(file.stat().st_size for file in files)
    reused = mmap.mmap(-1, largest) if prefaulted else None
    if reused is not None:
        reused.write(b"\1" * largest)  # fault every page in before the clock starts
    started = time.perf_counter()
    for file in files:
        size = file.stat().st_size
        buffer = reused if reused is not None else mmap.mmap(-1, size)
        with open(file, "rb", buffering=0) as handle:
            view = memoryview(buffer)[:size]
            while view:
                view = view[handle.readinto(view) :]
            del view  # the mmap cannot close while a view of it lives
        if buffer is not reused:
            buffer.close()
    seconds = time.perf_counter() - started
    if reused is not None:
        reused.close()
    return seconds


def _child(path: Path, device: str, *, plain: bool) -> None:
    """In a fresh interpreter: load `path` the worker's way and print seconds and memory as JSON."""
    started = time.perf_counter()
    import diffusers
    import torch
    import transformers

    from gpu_worker.optimize import PipelineOptions
    from gpu_worker.pipelines import load_from_directory

    # What a worker imports once at boot, not per load: the pipeline's and its components' classes.
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    for library, class_name in (spec for key, spec in index.items() if isinstance(spec, list) and None not in spec):
        getattr({"diffusers": diffusers, "transformers": transformers}[library], class_name)
    getattr(diffusers, index["_class_name"])
    import_s = time.perf_counter() - started
    base_rss = _status_bytes("VmRSS")
    started = time.perf_counter()
    if plain:  # what a user writes by hand: from_pretrained, then .to(device)
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
            path, dtype=torch.float16, variant="fp16", use_safetensors=True
        ).to(device)
    else:
        pipe = load_from_directory(
            path, name=path.name, device=device, dtype=torch.float16, options=PipelineOptions(channels_last=False)
        )
    call_s = time.perf_counter() - started
    for component in pipe.components.values():  # read every weight once: a lazily mapped load pays for it here
        if isinstance(component, torch.nn.Module):
            for tensor in component.state_dict().values():
                if tensor.device.type == "cpu":
                    _touch_pages(tensor)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "import_s": import_s,
                "call_s": call_s,
                "load_s": load_s,
                "base_rss_bytes": base_rss,
                "peak_rss_bytes": _status_bytes("VmHWM"),
            }
        )
    )


def _touch_pages(tensor: Any) -> None:
    """Read one element per 4 KiB page of `tensor`'s storage (cheap, and faults in every page)."""
    flat = tensor.reshape(-1)
    step = max(1, 4096 // flat.element_size())
    float(flat[::step].float().sum())


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def _load_once(path: Path, device: str, *, plain: bool = False) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--child", str(path), "--device", device, *(["--plain"] if plain else [])],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(name: str, path: Path, *, repeats: int, device: str) -> dict[str, Any]:
    """The figures of the module doc for the model built in `path`."""
    files = weight_files(path)
    weights = sum(file.stat().st_size for file in files)
    read_floor_s(files)  # into the page cache first: every figure below is from memory, none from the disk
    floors, loads, plain = [], [], []
    for _ in range(repeats):
        floors.append(read_floor_s(files))
        loads.append(_load_once(path, device))
        plain.append(_load_once(path, device, plain=True))
    floors.append(read_floor_s(files))
    floor = statistics.median(floors)
    prefaulted = read_floor_s(files, prefaulted=True)
    load_s = statistics.median(load["load_s"] for load in loads)
    extra_rss = max(load["peak_rss_bytes"] - load["base_rss_bytes"] for load in loads)
    return {
        "bench": "load",
        "model": name,
        "device": device,
        "dtype": "float16",
        "weights_bytes": weights,
        "weight_files": len(files),
        "read_floor_s": round(floor, 3),
        "read_floor_gb_per_s": round(weights / floor / 1e9, 2),
        "read_floor_prefaulted_s": round(prefaulted, 3),
        "load_s": round(load_s, 3),
        "load_call_s": round(statistics.median(load["call_s"] for load in loads), 3),
        "load_over_floor": round(load_s / floor, 2),
        "load_over_prefaulted_floor": round(load_s / prefaulted, 2),
        "plain_load_s": round(statistics.median(load["load_s"] for load in plain), 3),
        "plain_peak_rss_over_weights": round(
            max(load["peak_rss_bytes"] - load["base_rss_bytes"] for load in plain) / weights, 3
        ),
        "import_s": round(statistics.median(load["import_s"] for load in loads), 2),
        "peak_rss_bytes": max(load["peak_rss_bytes"] for load in loads),
        "rss_after_imports_bytes": min(load["base_rss_bytes"] for load in loads),
        "peak_rss_over_weights": round(extra_rss / weights, 3),
        "targets_met": load_s <= 2 * floor and extra_rss <= 1.3 * weights,
        "rounds": [
            {"read_floor_s": round(f, 3), "load_s": round(x["load_s"], 3)} for f, x in zip(floors, loads, strict=False)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sdq-bench-load")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.device, plain=args.plain)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        path = build_random_pipeline(name, args.cache_dir / name)
        print(json.dumps(measure(name, path, repeats=args.repeats, device=args.device)), flush=True)


if __name__ == "__main__":
    main()
