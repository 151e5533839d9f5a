"""Worker boots with `SDQ_COMPILE=1`: the first (compiling) against the second (compile cache in the model cache),
against a boot without compiling, each a fresh interpreter, measured in the same run.

    python -m bench.boot [--sizes 64x64] [--schedulers default] [--batch-max 1] [--repeats 1]

A boot is what a worker's device process does before it takes jobs: import torch and diffusers, load the tiny
model from a warm model cache and, with compile on, torch.compile its UNet and warm up every bucket
(`gpu_worker.compile`), with the compiler's caches where `sdq worker` puts them (the model cache). Prints one JSON
line: `uncompiled_s`, `compiled_first_s`, `compiled_second_s` (a restart: same model cache) and
`second_over_uncompiled` (target ≤ 1.5); with `--fresh-vm`, also `compiled_fresh_vm_s`, a boot whose Inductor
directory is empty, as on a new VM given only the model cache's artifact files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_BOOT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from gpu_worker.models import LoadedModels
from gpu_worker.settings import WorkerSettings
settings = WorkerSettings()
LoadedModels.from_settings(settings, device="cpu").preload(settings.preload_models)
"""


def boot(cache: Path, *, compile_on: bool, env: dict[str, str], fresh_vm: bool = False) -> tuple[float, str]:
    """Seconds from interpreter start to preloaded (and compiled) models, and the boot's log."""
    from gpu_worker.compile import compiler_cache_env

    full = {
        **os.environ,
        **env,
        **compiler_cache_env(cache),  # as `sdq worker` sets them
        "SDQ_MODEL_CACHE_DIR": str(cache),
        "SDQ_PRELOAD_MODELS": "tiny",
        "SDQ_COMPILE": "1" if compile_on else "0",
        "SDQ_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    if fresh_vm:  # an empty Inductor directory: only the cache artifacts carry over
        full["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="sdq-inductor-")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _BOOT], env=full, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"boot failed:\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def measure(cache: Path, env: dict[str, str], repeats: int, *, fresh_vm: bool = False) -> dict[str, Any]:
    """The figures of the module doc (medians over `repeats` for the uncompiled and second boots)."""
    from gpu_worker.tiny import build_tiny_pipeline

    build_tiny_pipeline(cache / "tiny")
    uncompiled = [boot(cache, compile_on=False, env=env)[0] for _ in range(repeats)]
    first, first_log = boot(cache, compile_on=True, env=env)
    seconds = [boot(cache, compile_on=True, env=env) for _ in range(repeats)]
    second = statistics.median(s for s, _ in seconds)
    fresh = boot(cache, compile_on=True, env=env, fresh_vm=True) if fresh_vm else None
    return {
        "bench": "boot",
        "uncompiled_s": round(statistics.median(uncompiled), 2),
        "compiled_first_s": round(first, 2),
        "compiled_second_s": round(second, 2),
        "second_over_uncompiled": round(second / statistics.median(uncompiled), 2),
        "first_over_uncompiled": round(first / statistics.median(uncompiled), 2),
        "first_cache": _hit(first_log),
        "second_cache": "hit" if all(_hit(log) == "hit" for _, log in seconds) else "miss",
        **({"compiled_fresh_vm_s": round(fresh[0], 2), "fresh_vm_cache": _hit(fresh[1])} if fresh else {}),
        "compile_cache_files": sorted(p.name for p in (cache / "compile").glob("*.bin")),
        "settings": env,
    }


def _hit(log: str) -> str:
    return "hit" if "compile cache hit" in log else "miss"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x64", help="SDQ_COMPILE_SIZES")
    parser.add_argument("--schedulers", default="default", help="SDQ_COMPILE_SCHEDULERS (empty: all)")
    parser.add_argument("--batch-max", default="1", help="SDQ_BATCH_MAX")
    parser.add_argument("--mode", default="default", help="SDQ_COMPILE_MODE")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--fresh-vm", action="store_true", help="also boot with an empty Inductor directory")
    args = parser.parse_args()
    env = {
        "SDQ_COMPILE_SIZES": args.sizes,
        "SDQ_COMPILE_SCHEDULERS": args.schedulers,
        "SDQ_BATCH_MAX": args.batch_max,
        "SDQ_COMPILE_MODE": args.mode,
    }
    with tempfile.TemporaryDirectory(prefix="sdq-bench-boot-") as tmp:
        print(json.dumps(measure(Path(tmp) / "models", env, args.repeats, fresh_vm=args.fresh_vm)))


if __name__ == "__main__":
    main()
