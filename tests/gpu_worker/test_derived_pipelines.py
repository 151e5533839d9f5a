"""Image pipelines derived with `from_pipe` share the loaded pipeline's weights: no model is in memory twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gpu_worker.adapters import adapters_of
from gpu_worker.conditioning import ControlUnit, InputSpec, IpAdapterUnit, Mode, PreparedInputs
from gpu_worker.inference import generate
from gpu_worker.models import LoadedModels
from gpu_worker.pipelines import pipeline_bytes
from producer.jobs import JobRequest

from .inputs_support import half_white, photo, square_mask

MakeJob = Callable[..., JobRequest]


def _module_storages(module: torch.nn.Module) -> dict[int, int]:
    """Every parameter and buffer storage of a torch module: data pointer → bytes."""
    tensors = (*module.parameters(), *module.buffers())
    return {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in tensors}


def _storages(pipe: Any) -> dict[int, int]:
    """Every parameter and buffer storage of a pipeline's torch modules."""
    found: dict[int, int] = {}
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            found |= _module_storages(component)
    return found


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_every_derived_pipeline_holds_the_base_pipelines_own_weights(
    family_pipes: Callable[[str], Any], model: str
) -> None:
    base = family_pipes(model)
    controlnet = "tiny-controlnet" if model == "tiny" else "tiny-sdxl-controlnet"
    adapters = adapters_of(base)
    base_storages = _storages(base)
    controlnet_storages = _module_storages(adapters.controlnet(controlnet))
    for mode in Mode:
        for units in ((), (controlnet,)):
            derived = adapters.pipeline(mode, units)
            for name in ("unet", "vae", "text_encoder", "scheduler", "tokenizer"):
                assert getattr(derived, name) is getattr(base, name), (mode, units, name)
            storages = _storages(derived)
            # Measured: every tensor of the derived pipeline is one of the base's (or the shared ControlNet's).
            assert set(storages) <= set(base_storages) | set(controlnet_storages), (mode, units)
            assert sum(storages.values()) <= sum(base_storages.values()) + sum(controlnet_storages.values())
    assert adapters.pipeline(Mode.TEXT) is base
    assert adapters.pipeline(Mode.IMAGE) is adapters.pipeline(Mode.IMAGE)  # made once, kept


def test_image_jobs_add_no_weights_to_a_loaded_model_but_their_adapters(model_cache: Path, job: MakeJob) -> None:
    models = LoadedModels(cache_dir=model_cache, device="cpu", capacity=1)
    try:
        with models.use("tiny") as (pipe, _):
            before = _storages(pipe)
            generate(pipe, job(), inputs=PreparedInputs(InputSpec(Mode.IMAGE, 0.5), image=photo()))
            generate(pipe, job(), inputs=PreparedInputs(InputSpec(Mode.INPAINT, 0.5), photo(), square_mask()))
            assert _storages(pipe) == before
            assert pipeline_bytes(adapters_of(pipe).pipeline(Mode.INPAINT)) == pipeline_bytes(pipe)
            spec = InputSpec(controlnets=(ControlUnit("tiny-controlnet"),), ip_adapter=IpAdapterUnit("tiny-ip-adapter"))
            generate(
                pipe, job(), inputs=PreparedInputs(spec, control_images=(half_white(True),), ip_adapter_image=photo())
            )
            adapters = adapters_of(pipe)
            assert adapters.controlnets == ["tiny-controlnet"] and adapters.ip.loaded == ["tiny-ip-adapter"]
            generate(
                pipe, job(), inputs=PreparedInputs(spec, control_images=(half_white(False),), ip_adapter_image=photo())
            )
            assert adapters.controlnets == ["tiny-controlnet"]  # loaded once, kept like a LoRA
        assert models.stats.loads == 1
    finally:
        models.close()
    assert adapters.controlnets == [] and adapters.ip.loaded == []  # released with the pipeline
