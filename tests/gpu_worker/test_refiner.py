"""The SDXL refiner as a job's second stage, on the real tiny SDXL base and refiner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gpu_worker.checkpoint import DenoiseTap, decode_snapshot, encode_snapshot
from gpu_worker.errors import InvalidInputError, JobInterruptedError
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from producer.jobs import JobRequest

MakeJob = Callable[..., JobRequest]
REFINED = {"model": "tiny-sdxl", "steps": 8, "seed": 5, "refiner": {"model": "tiny-sdxl-refiner", "switch_at": 0.5}}


def _pixels(images: list[Any]) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in images]


def test_a_refined_job_runs_both_stages_and_counts_their_steps(
    family_pipes: Callable[[str], Any], job: MakeJob
) -> None:
    pipe = family_pipes("tiny-sdxl")
    steps: list[tuple[int, int]] = []
    refined = generate(pipe, job(**REFINED, num_images=2), on_step=lambda done, total: steps.append((done, total)))
    assert [done for done, _ in steps] == list(range(1, 9)) and {total for _, total in steps} == {8}
    plain = generate(pipe, job(**{**REFINED, "refiner": None}, num_images=2))
    assert [image.size for image in refined] == [(64, 64)] * 2
    assert all(not np.array_equal(a, b) for a, b in zip(_pixels(refined), _pixels(plain), strict=True))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(_pixels(refined), _pixels(generate(pipe, job(**REFINED, num_images=2))), strict=True)
    )


def test_a_base_model_serves_as_its_own_refiner(family_pipes: Callable[[str], Any], job: MakeJob) -> None:
    pipe = family_pipes("tiny-sdxl")
    [image] = generate(pipe, job(**{**REFINED, "refiner": {"model": "tiny-sdxl", "switch_at": 0.75}}))
    assert image.size == (64, 64)


@pytest.mark.parametrize("step", [2, 6])  # in the base stage, and in the refiner stage
def test_a_refined_job_resumes_bit_exactly(family_pipes: Callable[[str], Any], job: MakeJob, step: int) -> None:
    pipe = family_pipes("tiny-sdxl")
    request = job(**REFINED)

    def interrupt(done: int, total: int) -> None:
        if done == step:
            raise JobInterruptedError("spot notice")

    uninterrupted = generate(pipe, request)
    with pytest.raises(JobInterruptedError) as caught:
        generate(pipe, request, on_step=interrupt, tap=DenoiseTap())
    snapshot = decode_snapshot(encode_snapshot(caught.value.snapshot))  # type: ignore[arg-type]
    assert snapshot.step == min(step, 4)  # the refiner stage hands off the base stage's final state
    resumed = generate(pipe, request, tap=DenoiseTap(resume=snapshot))
    assert np.array_equal(_pixels(uninterrupted)[0], _pixels(resumed)[0])


def test_refiners_are_loaded_once_and_released_with_their_base(model_cache: Path, job: MakeJob) -> None:
    models = LoadedModels(cache_dir=model_cache, device="cpu")
    with models.use("tiny-sdxl") as (pipe, _):
        first = generate(pipe, job(**REFINED))
        refiners = pipe._sdqueue_refiners
        [loaded] = refiners._loaded.values()
        assert generate(pipe, job(**REFINED))[0].tobytes() == first[0].tobytes()
        assert list(refiners._loaded.values()) == [loaded]  # not loaded again
    models.close()
    assert refiners._loaded == {}


@pytest.mark.parametrize(
    ("model", "refiner", "message"),
    [("tiny", "tiny-sdxl-refiner", "only SDXL models"), ("tiny-sdxl", "tiny-sd3", "is not an SDXL model")],
)
def test_a_refiner_only_refines_sdxl_with_sdxl(
    family_pipes: Callable[[str], Any], job: MakeJob, model: str, refiner: str, message: str
) -> None:
    request = job(model=model, refiner={"model": refiner})
    with pytest.raises(InvalidInputError, match=f"^refiner: .*{message}"):
        generate(family_pipes(model), request)


@pytest.mark.parametrize(
    ("refiner", "location"),
    [
        ({"model": "x/y", "switch_at": 1.0}, ("refiner", "switch_at")),
        ({"model": "x/y", "switch_at": 0}, ("refiner", "switch_at")),
        ({"model": "a b"}, ("refiner", "model")),
        ({"model": "x/y", "at": 0.5}, ("refiner", "at")),
    ],
)
def test_the_refiner_field_is_validated(refiner: dict[str, Any], location: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        JobRequest(prompt="a fox", refiner=refiner)
    assert [error["loc"] for error in caught.value.errors()] == [location]
    assert JobRequest(prompt="a fox", refiner={"model": "x/y"}).refiner.switch_at == 0.8  # type: ignore[union-attr]
