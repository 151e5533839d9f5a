"""ControlNet and IP-Adapter runs on the real tiny SD 1.x and SDXL pipelines, with the tiny adapters."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from gpu_worker.conditioning import ControlUnit, InputSpec, IpAdapterUnit, Mode, PreparedInputs
from gpu_worker.errors import InvalidInputError
from gpu_worker.inference import generate, generate_batch
from producer.jobs import JobRequest

from .inputs_support import half_white, mean_difference, photo, pixels, square_mask

MakeJob = Callable[..., JobRequest]
#: Each family's tiny pipeline, ControlNet and IP-Adapter.
FAMILIES = {
    "tiny": ("tiny-controlnet", "tiny-ip-adapter"),
    "tiny-sdxl": ("tiny-sdxl-controlnet", "tiny-sdxl-ip-adapter"),
}


def controlled(
    controlnet: str, *images: Any, scale: float = 1.0, mode: Mode = Mode.TEXT, halving: bool = False
) -> PreparedInputs:
    """Inputs with one ControlNet per control image, at `scale` (each next one at half the last's if `halving`)."""
    units = tuple(
        ControlUnit(controlnet, conditioning_scale=scale / (2**index if halving else 1)) for index in range(len(images))
    )
    init = {"image": photo(), "mask": square_mask()} if mode is Mode.INPAINT else {"image": photo()}
    spec = InputSpec(mode, 0.7 if mode is not Mode.TEXT else 1.0, controlnets=units)
    return PreparedInputs(spec, control_images=tuple(images), **(init if mode is not Mode.TEXT else {}))


@pytest.mark.parametrize("model", FAMILIES)
def test_controlnet_output_follows_the_control_image(
    family_pipes: Callable[[str], Any], job: MakeJob, model: str
) -> None:
    pipe, controlnet = family_pipes(model), FAMILIES[model][0]
    [text] = generate(pipe, job(model=model))
    [left] = generate(pipe, job(model=model), inputs=controlled(controlnet, half_white(True)))
    [top] = generate(pipe, job(model=model), inputs=controlled(controlnet, half_white(False)))
    [off] = generate(pipe, job(model=model), inputs=controlled(controlnet, half_white(False), scale=0.0))
    assert mean_difference(left, top) > 0.5  # the control image changes the output
    assert mean_difference(left, text) > 0.5
    assert np.array_equal(pixels(off), pixels(text))  # at scale 0 it does nothing


@pytest.mark.parametrize("mode", [Mode.IMAGE, Mode.INPAINT])
def test_controlnet_combines_with_img2img_and_inpainting(tiny_pipe: Any, job: MakeJob, mode: Mode) -> None:
    [left] = generate(tiny_pipe, job(), inputs=controlled("tiny-controlnet", half_white(True), mode=mode))
    [top] = generate(tiny_pipe, job(), inputs=controlled("tiny-controlnet", half_white(False), mode=mode))
    assert mean_difference(left, top) > 0.2
    if mode is Mode.INPAINT:
        outside = np.asarray(square_mask()) < 128
        assert np.abs(pixels(left) - pixels(photo()))[outside].max() <= 2


@pytest.mark.parametrize("mode", [Mode.TEXT, Mode.IMAGE])
def test_two_controlnets_stack_and_batch(tiny_pipe: Any, job: MakeJob, mode: Mode) -> None:
    [one] = generate(tiny_pipe, job(), inputs=controlled("tiny-controlnet", half_white(True), mode=mode))
    two = controlled("tiny-controlnet", half_white(True), half_white(False), mode=mode, halving=True)
    [alone] = generate(tiny_pipe, job(), inputs=two)
    assert mean_difference(one, alone) > 0.2
    swapped = controlled("tiny-controlnet", half_white(False), half_white(True), mode=mode, halving=True)
    batched = generate_batch(tiny_pipe, [job(), job()], inputs=[two, swapped])
    assert mean_difference(batched[0][0], alone) < 0.1  # each row got its own pair of control images
    assert mean_difference(batched[1][0], alone) > 0.2


def test_a_controlnet_of_another_family_is_refused_naming_the_field(tiny_pipe: Any, job: MakeJob) -> None:
    with pytest.raises(InvalidInputError, match=r"controlnets\.0\.model: tiny-sdxl-controlnet"):
        generate(tiny_pipe, job(), inputs=controlled("tiny-sdxl-controlnet", half_white(True)))


@pytest.mark.parametrize(
    ("model", "adapter"),
    [(model, adapter) for model, (_, plain) in FAMILIES.items() for adapter in (plain, f"{plain}-plus")],
)
def test_ip_adapter_scale_changes_the_output(
    family_pipes: Callable[[str], Any], job: MakeJob, model: str, adapter: str
) -> None:
    # Plain IP-Adapters read the encoder's image embeds; Plus reads its hidden states through a resampler.
    pipe = family_pipes(model)

    def with_scale(scale: float, reference: Any = None) -> Any:
        spec = InputSpec(ip_adapter=IpAdapterUnit(adapter, scale))
        return generate(pipe, job(model=model), inputs=PreparedInputs(spec, ip_adapter_image=reference or photo()))[0]

    [before] = generate(pipe, job(model=model))
    strong, weak, none = with_scale(1.0), with_scale(0.5), with_scale(0.0)
    assert mean_difference(strong, weak) > 1
    assert mean_difference(strong, with_scale(1.0, half_white(True))) > 1  # the reference image matters
    assert np.array_equal(pixels(none), pixels(before))  # scale 0 adds exactly nothing
    [after] = generate(pipe, job(model=model))
    assert np.array_equal(pixels(after), pixels(before))  # switched off again for a plain job


def test_ip_adapter_rows_each_use_their_own_reference(tiny_pipe: Any, job: MakeJob) -> None:
    spec = InputSpec(ip_adapter=IpAdapterUnit("tiny-ip-adapter", 1.0))
    references = [photo(), half_white(True)]
    requests = [job(seed=3), job(seed=3)]
    batched = generate_batch(tiny_pipe, requests, inputs=[PreparedInputs(spec, ip_adapter_image=r) for r in references])
    for request, reference, [together] in zip(requests, references, batched, strict=True):
        [alone] = generate(tiny_pipe, request, inputs=PreparedInputs(spec, ip_adapter_image=reference))
        assert mean_difference(together, alone) < 0.1  # float noise of a larger batch at most
    assert mean_difference(batched[0][0], batched[1][0]) > 1


def test_image_inputs_are_refused_for_families_without_image_pipelines_here(
    family_pipes: Callable[[str], Any], job: MakeJob
) -> None:
    with pytest.raises(InvalidInputError, match="image: flux"):
        generate(
            family_pipes("tiny-flux"),
            job(model="tiny-flux"),
            inputs=PreparedInputs(InputSpec(Mode.IMAGE, 0.5), photo()),
        )


def test_plain_and_plus_ip_adapters_take_turns_on_one_pipeline(tiny_pipe: Any, job: MakeJob) -> None:
    # A Plus resampler brings attention layers of its own into the UNet's processors: switching between the two
    # kinds, and back to the plain UNet, must put each one's full set back.
    def run(adapter: str | None) -> Any:
        if adapter is None:
            return generate(tiny_pipe, job())[0]
        spec = InputSpec(ip_adapter=IpAdapterUnit(adapter, 1.0))
        return generate(tiny_pipe, job(), inputs=PreparedInputs(spec, ip_adapter_image=photo()))[0]

    plain, plus, bare = run("tiny-ip-adapter"), run("tiny-ip-adapter-plus"), run(None)
    assert mean_difference(plain, plus) > 1 and mean_difference(plus, bare) > 1
    for adapter, first in (("tiny-ip-adapter", plain), ("tiny-ip-adapter-plus", plus), (None, bare)):
        assert np.array_equal(pixels(run(adapter)), pixels(first))


def test_a_faceid_ip_adapter_is_refused_naming_the_field(
    tiny_pipe: Any, job: MakeJob, model_cache: Path, tmp_path: Path
) -> None:
    # FaceID's projection reads a face recognition model's embedding (insightface), which sdqueue does not run:
    # a FaceID file (h94/IP-Adapter-FaceID's keys, tiny) beside a tiny image encoder is refused, not run wrongly.
    import torch
    from safetensors.torch import save_file

    from gpu_worker.cache import ModelCache
    from gpu_worker.tiny_adapters import IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS

    plain = ModelCache(model_cache).acquire_adapter("tiny-ip-adapter").path
    folder = tmp_path / "faceid"
    shutil.copytree(plain / IMAGE_ENCODER_FOLDER, folder / IMAGE_ENCODER_FOLDER)
    cross, identity, tokens = 32, 16, 4
    weights = {
        "image_proj.proj.0.weight": torch.randn(2 * identity, identity),
        "image_proj.proj.0.bias": torch.zeros(2 * identity),
        "image_proj.proj.2.weight": torch.randn(cross * tokens, 2 * identity),
        "image_proj.proj.2.bias": torch.zeros(cross * tokens),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    with safe_open(str(plain / IP_ADAPTER_WEIGHTS), "pt") as layers:  # the cross-attention keys, as any adapter's
        weights |= {key: layers.get_tensor(key) for key in layers.keys() if key.startswith("ip_adapter.")}  # noqa: SIM118
    save_file(weights, str(folder / IP_ADAPTER_WEIGHTS))
    spec = InputSpec(ip_adapter=IpAdapterUnit(str(folder), 1.0))
    with pytest.raises(InvalidInputError, match=r"ip_adapter\.model: .* is a FaceID IP-Adapter"):
        generate(tiny_pipe, job(), inputs=PreparedInputs(spec, ip_adapter_image=photo()))
    [after] = generate(tiny_pipe, job())
    [before] = generate(tiny_pipe, job())
    assert np.array_equal(pixels(after), pixels(before))  # the plain UNet is back


def test_an_ip_adapter_beside_the_wrong_image_encoder_is_refused_naming_both_widths(
    tiny_pipe: Any, job: MakeJob, model_cache: Path, tmp_path: Path
) -> None:
    # As h94's SDXL `*_vit-h` files beside sdxl_models/image_encoder (ViT-bigG, not the ViT-H they read) would be.
    from gpu_worker.cache import ModelCache
    from gpu_worker.errors import ModelLoadError
    from gpu_worker.tiny_adapters import IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS, image_encoder

    plus = ModelCache(model_cache).acquire_adapter("tiny-ip-adapter-plus").path
    folder = tmp_path / "mismatched"
    folder.mkdir()
    shutil.copy(plus / IP_ADAPTER_WEIGHTS, folder / IP_ADAPTER_WEIGHTS)
    image_encoder(width=48).save_pretrained(folder / IMAGE_ENCODER_FOLDER, safe_serialization=True)
    spec = InputSpec(ip_adapter=IpAdapterUnit(str(folder), 1.0))
    with pytest.raises(ModelLoadError, match=r"reads image features 32 wide, but the hidden states .* are 48 wide"):
        generate(tiny_pipe, job(), inputs=PreparedInputs(spec, ip_adapter_image=photo()))
    [plain] = generate(tiny_pipe, job())
    [again] = generate(tiny_pipe, job())
    assert np.array_equal(pixels(plain), pixels(again))
