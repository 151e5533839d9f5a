"""Image-to-image and inpainting on the real tiny pipelines (SD 1.x and SDXL), through `generate_batch`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gpu_worker.conditioning import InputSpec, Mode, PreparedInputs
from gpu_worker.encode import encode_image
from gpu_worker.errors import InvalidInputError
from gpu_worker.inference import generate, generate_batch
from producer.jobs import JobRequest, OutputFormat

from .inputs_support import mean_difference, photo, pixels, square_mask

MakeJob = Callable[..., JobRequest]
#: The families whose image pipelines sdqueue runs.
IMAGE_FAMILY_MODELS = ("tiny", "tiny-sdxl")


def img2img(strength: float, seed: int = 0) -> PreparedInputs:
    return PreparedInputs(InputSpec(Mode.IMAGE, strength), image=photo(seed))


def inpaint(strength: float = 1.0) -> PreparedInputs:
    return PreparedInputs(InputSpec(Mode.INPAINT, strength), image=photo(), mask=square_mask())


@pytest.mark.parametrize("model", IMAGE_FAMILY_MODELS)
def test_img2img_strength_0_returns_the_input(family_pipes: Callable[[str], Any], job: MakeJob, model: str) -> None:
    steps: list[int] = []
    [image] = generate(family_pipes(model), job(model=model), inputs=img2img(0.0), on_step=lambda d, t: steps.append(d))
    assert np.array_equal(pixels(image), pixels(photo()))
    assert steps == []  # nothing was denoised


@pytest.mark.parametrize("model", IMAGE_FAMILY_MODELS)
def test_img2img_strength_1_matches_text_to_image_with_the_same_seed(
    family_pipes: Callable[[str], Any], job: MakeJob, model: str
) -> None:
    pipe = family_pipes(model)
    [text] = generate(pipe, job(model=model))
    [full] = generate(pipe, job(model=model), inputs=img2img(1.0))
    assert np.array_equal(pixels(full), pixels(text))


@pytest.mark.parametrize("model", IMAGE_FAMILY_MODELS)
def test_img2img_in_between_starts_from_the_image(family_pipes: Callable[[str], Any], job: MakeJob, model: str) -> None:
    pipe = family_pipes(model)
    [text] = generate(pipe, job(model=model))
    [low] = generate(pipe, job(model=model, steps=8), inputs=img2img(0.25))
    [high] = generate(pipe, job(model=model, steps=8), inputs=img2img(0.75))
    [other_photo] = generate(pipe, job(model=model, steps=8), inputs=img2img(0.25, seed=5))
    assert mean_difference(low, text) > 5  # not text-to-image
    assert mean_difference(low, other_photo) > 1  # the image matters
    assert mean_difference(low, photo()) < mean_difference(high, photo())  # more strength, further from it


def test_img2img_progress_counts_only_the_steps_it_runs(tiny_pipe: Any, job: MakeJob) -> None:
    seen: list[tuple[int, int]] = []
    generate(tiny_pipe, job(steps=10), inputs=img2img(0.5), on_step=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert seen == [(done, total) for done in range(1, total + 1)]
    assert 5 <= total <= 6  # half of 10 steps (SD's PNDM adds one)


@pytest.mark.parametrize("model", (*IMAGE_FAMILY_MODELS, "tiny-inpaint"))
def test_inpainting_keeps_pixels_outside_the_mask_and_changes_inside(
    family_pipes: Callable[[str], Any], job: MakeJob, model: str
) -> None:
    [image] = generate(family_pipes(model), job(model=model), inputs=inpaint())
    difference = np.abs(pixels(image) - pixels(photo())).max(axis=-1)
    inside = np.asarray(square_mask()) > 127
    assert difference[~inside].max() <= 2
    assert difference[inside].mean() > 20


def test_an_inpainting_model_refuses_a_job_without_a_mask(family_pipes: Callable[[str], Any], job: MakeJob) -> None:
    pipe = family_pipes("tiny-inpaint")
    assert pipe.unet.config.in_channels == 9  # latents, mask, masked image
    with pytest.raises(InvalidInputError, match="mask_image"):
        generate(pipe, job(model="tiny-inpaint"))
    with pytest.raises(InvalidInputError, match="mask_image"):
        generate(pipe, job(model="tiny-inpaint"), inputs=img2img(0.5))


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_same_inputs_and_seed_give_byte_identical_output(tiny_pipe: Any, job: MakeJob, mode: str) -> None:
    inputs = img2img(0.6) if mode == "img2img" else inpaint(0.9)
    first = generate(tiny_pipe, job(seed=77), inputs=inputs)
    again = generate(tiny_pipe, job(seed=77), inputs=PreparedInputs(inputs.spec, inputs.image.copy(), inputs.mask))
    other_seed = generate(tiny_pipe, job(seed=78), inputs=inputs)
    encoded = [encode_image(image, OutputFormat.PNG) for image in (*first, *again, *other_seed)]
    assert encoded[0] == encoded[1]
    assert encoded[0] != encoded[2]


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_jobs_batched_in_one_call_match_each_job_alone(tiny_pipe: Any, job: MakeJob, mode: str) -> None:
    def inputs(seed: int) -> PreparedInputs:
        if mode == "img2img":
            return img2img(0.5, seed)
        return PreparedInputs(InputSpec(Mode.INPAINT, 0.8), image=photo(seed), mask=square_mask())

    requests = [job(seed=1, prompt="a red fox"), job(seed=40, num_images=2), job(seed=9)]
    prepared = [inputs(0), inputs(1), inputs(2)]
    batched = generate_batch(tiny_pipe, requests, inputs=prepared)
    assert [len(images) for images in batched] == [1, 2, 1]
    for request, item, images in zip(requests, prepared, batched, strict=True):
        alone = generate(tiny_pipe, request, inputs=item)
        for together, single in zip(images, alone, strict=True):
            assert np.abs(pixels(together) - pixels(single)).max() <= 1  # float noise of a larger batch at most
    assert mean_difference(batched[1][0], batched[1][1]) > 5  # a job's images differ by seed only, and do


def test_a_call_refuses_jobs_of_different_input_specs(tiny_pipe: Any, job: MakeJob) -> None:
    with pytest.raises(ValueError, match="share their input spec"):
        generate_batch(tiny_pipe, [job(), job()], inputs=[img2img(0.5), img2img(0.6)])


def test_an_input_of_the_wrong_size_names_its_field(tiny_pipe: Any, job: MakeJob) -> None:
    with pytest.raises(InvalidInputError, match="mask_image: is 32x32"):
        generate(
            tiny_pipe,
            job(),
            inputs=PreparedInputs(InputSpec(Mode.INPAINT, 0.5), photo(), square_mask(32, (0, 0, 8, 8))),
        )


def test_text_to_image_is_unchanged_after_image_jobs(tiny_pipe: Any, job: MakeJob) -> None:
    [before] = generate(tiny_pipe, job(seed=5))
    generate(tiny_pipe, job(seed=5), inputs=img2img(0.5))
    generate(tiny_pipe, job(seed=5, scheduler="euler"), inputs=inpaint(0.7))
    [after] = generate(tiny_pipe, job(seed=5))
    assert np.array_equal(pixels(before), pixels(after))


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_the_fp16_safe_sdxl_vae_encodes_image_inputs_too(model_cache: Any, job: MakeJob, mode: str) -> None:
    import torch

    from gpu_worker.pipelines import load_pipeline
    from gpu_worker.vae import make_vae_fp16_safe

    pipe = load_pipeline("tiny-sdxl", cache_dir=model_cache, device="cpu")
    pipe.vae.to(torch.float16)
    assert make_vae_fp16_safe(pipe)  # as on a bfloat16 GPU: the VAE in bfloat16, everything else not
    [image] = generate(pipe, job(model="tiny-sdxl"), inputs=img2img(0.5) if mode == "img2img" else inpaint(0.8))
    assert image.size == (64, 64) and mean_difference(image, photo()) > 1
