"""Compiled workers: the buckets warmed up, the cache key, and the compile cache reused by a second worker process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gpu_worker.compile import Bucket, buckets, cache_key, compiler_cache_env, scheduler_families
from producer.jobs import Scheduler

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_size_scheduler_family_and_batch_shape_is_a_bucket(tiny_pipe: Any) -> None:
    families = scheduler_families(tiny_pipe, list(Scheduler))
    # PNDM (the tiny model's own) counts integer timesteps, Euler floats: two graphs, two families.
    assert families[0] is Scheduler.DEFAULT and len(families) == 2
    assert tiny_pipe.scheduler.__class__.__name__ == "PNDMScheduler"  # the model's own scheduler is back
    warm = buckets(tiny_pipe, batch_max=8)
    sides = {(b.width, b.height) for b in warm}
    assert sides == {(512, 512)}  # the tiny model's native size is the API's default
    shapes = {(b.images, b.guidance) for b in warm}
    assert shapes == {(1, False), (1, True), (2, True)}  # UNet batches 1, 2 and 4 (then dynamic)
    assert len(warm) == len(sides) * len(families) * len(shapes)
    single = buckets(tiny_pipe, sizes=[(64, 64), (96, 64)], batch_max=1, schedulers=[Scheduler.DEFAULT])
    assert [(b.width, b.height, b.images, b.guidance) for b in single] == [
        (64, 64, 1, False),
        (64, 64, 1, True),
        (96, 64, 1, False),
        (96, 64, 1, True),
    ]


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_every_family_has_buckets_of_schedulers_it_can_run(family_pipes: Any, model: str) -> None:
    pipe = family_pipes(model)
    original = type(pipe.scheduler)
    warm = buckets(pipe, batch_max=4)
    families = list(dict.fromkeys(b.scheduler for b in warm))
    assert families[0] is Scheduler.DEFAULT and type(pipe.scheduler) is original
    for bucket in warm:  # every bucket is a request the job path accepts for this model
        assert bucket.request(model, 2).scheduler in families
    key = cache_key(model, pipe, warm, "default")
    assert model in key and key != cache_key("tiny", pipe, warm, "default")


def test_the_cache_key_changes_with_the_model_the_shapes_and_the_mode(tiny_pipe: Any) -> None:
    warm = [Bucket(64, 64, Scheduler.DEFAULT, 1, True)]
    key = cache_key("tiny", tiny_pipe, warm, "default")
    assert key == cache_key("tiny", tiny_pipe, warm, "default") and key.endswith(".bin")
    assert "torch-" in key and "cpu" in key
    others = {
        cache_key("other/model", tiny_pipe, warm, "default"),
        cache_key("tiny", tiny_pipe, [*warm, Bucket(64, 64, Scheduler.DEFAULT, 2, True)], "default"),
        cache_key("tiny", tiny_pipe, warm, "max-autotune"),
    }
    assert key not in others and len(others) == 3


def test_a_compiled_unet_still_gets_its_images_stamped(tiny_pipe: Any) -> None:
    import torch
    from PIL import Image

    from gpu_worker.families import rendered_by, stamp

    original = tiny_pipe.unet
    tiny_pipe.unet = torch.compile(original, backend="eager")  # the OptimizedModule wrapper; nothing compiles
    try:
        image = Image.new("RGB", (8, 8))
        stamp([image], tiny_pipe)
    finally:
        tiny_pipe.unet = original
    assert rendered_by(image) is not None and rendered_by(image)[1] == "float32"


def test_the_compilers_own_caches_live_in_the_model_cache(tmp_path: Path) -> None:
    env = compiler_cache_env(tmp_path / "models")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "models" / "compile" / "inductor")
    assert env["TRITON_CACHE_DIR"].startswith(str(tmp_path / "models"))


_BOOT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from gpu_worker.models import LoadedModels
from gpu_worker.settings import WorkerSettings
settings = WorkerSettings()
LoadedModels.from_settings(settings, device="cpu").preload(settings.preload_models)
"""


def _boot(cache: Path, inductor: Path) -> str:
    env = {
        **os.environ,
        **compiler_cache_env(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(inductor),  # a fresh VM's: empty, so only the model cache's file carries over
        "SDQ_MODEL_CACHE_DIR": str(cache),
        "SDQ_PRELOAD_MODELS": "tiny",
        "SDQ_COMPILE": "1",
        "SDQ_COMPILE_MODE": "default",
        "SDQ_COMPILE_SIZES": "64x64",
        "SDQ_COMPILE_SCHEDULERS": "default",
        "SDQ_TORCH_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    done = subprocess.run([sys.executable, "-c", _BOOT], env=env, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.slow
@pytest.mark.soak  # two real compiled boots: 4–6 minutes of a 2-core CPU, so `make soak`, not `make test`
@pytest.mark.timeout(5000)
def test_a_second_worker_process_reuses_the_compile_cache_the_first_left(model_cache: Path, tmp_path: Path) -> None:
    # Two real boots of the worker's model set with SDQ_COMPILE=1 (minutes each on a small CPU: C++ compiles).
    cache = tmp_path / "models"
    cache.mkdir()
    os.symlink(model_cache / "tiny", cache / "tiny")
    first = _boot(cache, tmp_path / "inductor-1")
    [artifact] = (cache / "compile").glob("*.bin")
    assert "compile cache miss" in first and artifact.stat().st_size > 0
    second = _boot(cache, tmp_path / "inductor-2")
    assert "compile cache hit" in second and "2 buckets" in second
    assert list((cache / "compile").glob("*.bin")) == [artifact]  # reused, not written again
