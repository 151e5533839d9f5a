"""Every model family on its real tiny pipeline: what it accepts, its schedulers, LoRAs and bit-exact resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_worker.cache import LORAS_DIR
from gpu_worker.checkpoint import DenoiseTap, Snapshot, decode_snapshot, encode_snapshot
from gpu_worker.errors import InvalidInputError, JobInterruptedError
from gpu_worker.families import Family, family_of_class, rendered_by, run_dtype, traits_of, traits_of_directory
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from gpu_worker.refs import TINY_MODELS
from gpu_worker.tiny import build_tiny_lora
from gpu_worker.tiny_families import FAMILY_BUILDERS
from producer.jobs import JobRequest, LoraRequest, Scheduler
from tests.gpu_worker.conftest import FAMILY_MODELS

MakeJob = Callable[..., JobRequest]
Pipes = Callable[[str], Any]
FAMILY = {"tiny": Family.SD, "tiny-sdxl": Family.SDXL, "tiny-sd3": Family.SD3, "tiny-flux": Family.FLUX}
PIPELINE = {
    "tiny": "StableDiffusionPipeline",
    "tiny-sdxl": "StableDiffusionXLPipeline",
    "tiny-sd3": "StableDiffusion3Pipeline",
    "tiny-flux": "FluxPipeline",
}
#: Each family's schedulers worth a resume test: its default, and a multistep one with history to restore.
RESUMABLE = [(model, scheduler) for model in FAMILY_MODELS for scheduler in (Scheduler.DEFAULT, Scheduler.DPMPP_2M)]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_every_tiny_model_has_a_builder() -> None:
    assert set(FAMILY_BUILDERS) == set(TINY_MODELS) - {"tiny"}


@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_each_tiny_family_loads_through_the_real_path_and_renders(
    family_pipes: Pipes, model_cache: Path, job: MakeJob, model: str
) -> None:
    pipe = family_pipes(model)  # built with save_pretrained into the cache, then loaded from there
    index = json.loads((model_cache / model / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINE[model]
    assert list((model_cache / model).rglob("*.safetensors")) and not list((model_cache / model).rglob("*.bin"))
    assert type(pipe).__name__ == PIPELINE[model]
    assert traits_of(pipe).family is FAMILY[model] is traits_of_directory(model_cache / model).family
    images = generate(pipe, job(model=model, num_images=2))
    assert [image.size for image in images] == [(64, 64)] * 2
    assert not np.array_equal(_pixels(images[0]), _pixels(images[1]))  # per-image seeds
    # The result says which family and dtype rendered it (for the job record).
    assert rendered_by(images[0]) == (FAMILY[model].value, "float32")


def test_the_t5_tokenizer_was_made_offline_and_reads_words(family_pipes: Pipes) -> None:
    tokenizer = family_pipes("tiny-flux").tokenizer_2
    ids = tokenizer("a photo of a cat")["input_ids"]
    assert len(ids) == 5 + 1 and ids[-1] == tokenizer.eos_token_id  # one piece per word, then </s>


@pytest.mark.parametrize(
    ("class_name", "family"),
    [
        ("StableDiffusionPipeline", Family.SD),
        ("StableDiffusionXLImg2ImgPipeline", Family.SDXL),
        ("StableDiffusion3Pipeline", Family.SD3),
        ("FluxPipeline", Family.FLUX),
        ("PixArtSigmaPipeline", Family.OTHER),
    ],
)
def test_family_is_read_from_the_pipeline_class(class_name: str, family: Family) -> None:
    assert family_of_class(class_name) is family


def test_dtypes_per_family_and_device() -> None:
    sd, flux = traits_of_directory(Path("/nonexistent")), _traits(Family.FLUX)
    assert sd.cuda_dtype == torch.float16 and flux.cuda_dtype == torch.bfloat16
    assert run_dtype(sd, "cpu") == run_dtype(flux, "cpu") == torch.float32


def test_the_workers_family_rules_are_the_apis() -> None:
    from producer.families import FAMILY_RULES

    # One source of truth: the traits the worker checks a job against wrap the rules the API checks it against.
    assert {family: _traits(family).rules for family in Family} == FAMILY_RULES
    assert all(_traits(family).rules is FAMILY_RULES[family] for family in Family)


def _traits(family: Family) -> Any:
    from gpu_worker.families import _TRAITS

    return _TRAITS[family]


@pytest.mark.parametrize(
    ("model", "overrides", "field"),
    [
        ("tiny-flux", {"negative_prompt": "blurry"}, "negative_prompt"),
        ("tiny-flux", {"scheduler": Scheduler.DDIM}, "scheduler"),
        ("tiny-sd3", {"scheduler": Scheduler.PNDM}, "scheduler"),
        ("tiny-sd3", {"scheduler": Scheduler.EULER_ANCESTRAL}, "scheduler"),
        ("tiny-sd3", {"refiner": {"model": "tiny-sdxl-refiner"}}, "refiner"),
    ],
)
def test_requests_a_family_cannot_serve_fail_as_invalid_input(
    family_pipes: Pipes, job: MakeJob, model: str, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}: ") as caught:
        generate(family_pipes(model), job(model=model, **overrides))
    assert caught.value.error_code.value == "invalid_input"


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_flow_matching_families_run_their_schedulers(family_pipes: Pipes, job: MakeJob, model: str) -> None:
    pipe = family_pipes(model)
    rendered, used = {}, {}
    for scheduler in (Scheduler.DEFAULT, Scheduler.EULER, Scheduler.DPMPP_2M, Scheduler.UNIPC):
        rendered[scheduler] = _pixels(generate(pipe, job(model=model, scheduler=scheduler))[0])
        used[scheduler] = (type(pipe.scheduler).__name__, pipe.scheduler.config.get("use_flow_sigmas"))
    assert used == {
        Scheduler.DEFAULT: ("FlowMatchEulerDiscreteScheduler", None),
        Scheduler.EULER: ("FlowMatchEulerDiscreteScheduler", None),
        Scheduler.DPMPP_2M: ("DPMSolverMultistepScheduler", True),
        Scheduler.UNIPC: ("UniPCMultistepScheduler", True),
    }
    # euler is the models' own flow-matching Euler; the multistep solvers are other samplers of the same flow
    assert np.array_equal(rendered[Scheduler.DEFAULT], rendered[Scheduler.EULER])
    assert not np.array_equal(rendered[Scheduler.DEFAULT], rendered[Scheduler.DPMPP_2M])


def test_flux_uses_its_guidance_scale(family_pipes: Pipes, job: MakeJob) -> None:
    pipe = family_pipes("tiny-flux")
    low, high = (_pixels(generate(pipe, job(model="tiny-flux", guidance_scale=g))[0]) for g in (1.0, 8.0))
    assert not np.array_equal(low, high)


def _interrupt_at(step: int) -> Callable[[int, int], None]:
    def on_step(done: int, total: int) -> None:
        if done == step:
            raise JobInterruptedError(f"test interruption after step {step}")

    return on_step


@pytest.mark.parametrize(("model", "scheduler"), RESUMABLE)
def test_each_family_resumes_bit_exactly(family_pipes: Pipes, job: MakeJob, model: str, scheduler: Scheduler) -> None:
    pipe = family_pipes(model)
    request = job(model=model, scheduler=scheduler, steps=6, num_images=2, seed=11)
    uninterrupted = generate(pipe, request)
    with pytest.raises(JobInterruptedError) as caught:
        generate(pipe, request, on_step=_interrupt_at(3), tap=DenoiseTap())
    assert isinstance(caught.value.snapshot, Snapshot)
    snapshot = decode_snapshot(encode_snapshot(caught.value.snapshot))
    assert snapshot.step == 3 and len(snapshot.generators) == 2

    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    calls: list[int] = []
    # On the denoiser's first layer: a hook on the denoiser itself fires for the stub too (nn.Module.__call__).
    hook = next(denoiser.children()).register_forward_hook(lambda *args: calls.append(1))
    try:
        resumed = generate(pipe, request, tap=DenoiseTap(resume=snapshot))
    finally:
        hook.remove()
    # The steps before the resume point replay with a stub, not the real denoiser (it never reaches the hook).
    assert len(calls) == pipe.num_timesteps - 3
    for whole, continued in zip(uninterrupted, resumed, strict=True):
        assert np.array_equal(_pixels(whole), _pixels(continued))


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_each_family_takes_loras(
    family_pipes: Pipes, model_cache: Path, job: MakeJob, tmp_path: Path, model: str
) -> None:
    from gpu_worker.cache import ModelCache

    family_pipes(model)  # built into the session's cache
    build_tiny_lora(tmp_path / LORAS_DIR / "style", base=model_cache / model, seed=1)
    cache = ModelCache(tmp_path)
    (tmp_path / model).symlink_to(model_cache / model)  # the same tiny build, seen from this cache
    models = LoadedModels(cache=cache, device="cpu")
    try:
        request = job(model=model)
        renders = []
        for loras in ((), (LoraRequest(name="style", scale=1.0),), (LoraRequest(name="style", scale=0.0),), ()):
            with models.use(model, loras=loras) as (pipe, _):
                renders.append(_pixels(generate(pipe, request)[0]))
    finally:
        models.close()
    plain, styled, zero, again = renders
    assert not np.array_equal(plain, styled)
    assert np.array_equal(plain, zero) and np.array_equal(plain, again)


@pytest.mark.parametrize(("model", "reads"), [("tiny-sd3", 256), ("tiny-flux", 512)])
def test_t5_families_warn_only_past_what_t5_reads(family_pipes: Pipes, model: str, reads: int) -> None:
    from gpu_worker.inference import prompt_truncation_warning

    pipe = family_pipes(model)
    # Past CLIP's 77 tokens, which these models also use, but within T5's reach: every word is read.
    assert prompt_truncation_warning(pipe, " ".join(["cat"] * 100)) is None
    assert prompt_truncation_warning(pipe, " ".join(["cat"] * (reads - 1))) is None  # with T5's end marker
    assert prompt_truncation_warning(pipe, " ".join(["cat"] * reads)) == (
        f"prompt is {reads + 1} tokens; the model reads only the first {reads}, the rest was ignored"
    )


def test_sdxl_warns_at_clips_77_tokens(family_pipes: Pipes) -> None:
    from gpu_worker.inference import prompt_truncation_warning

    assert prompt_truncation_warning(family_pipes("tiny-sdxl"), " ".join(["cat"] * 76)) == (
        "prompt is 78 tokens; the model reads only the first 77, the rest was ignored"
    )
