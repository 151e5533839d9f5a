"""The SDXL refiner: a second model that finishes the base model's denoising in the same job.

A request with `refiner: {model, switch_at}` runs the base SDXL pipeline over the first `switch_at` of the noise
schedule (`denoising_end`), hands its latents (not a decoded image) to the refiner as an image-to-image pipeline
starting at the same point (`denoising_start`), and only the refiner's output is decoded. The refiner is any SDXL
model (the official refiner has only the second text encoder and conditions on an aesthetic score), loaded once per
base pipeline, with its own cache lease, and kept until the base is unloaded.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from .errors import InvalidInputError
from .families import Family, traits_of

#: Loads a refiner model by reference: returns the loaded pipeline and a callable that releases it (its lease).
RefinerLoader = Callable[[str], tuple[Any, Callable[[], None]]]
_ATTRIBUTE = "_sdqueue_refiners"


class Refiners:
    """The refiners loaded for one base pipeline, by model reference."""

    def __init__(self, load: RefinerLoader) -> None:
        self._load = load
        self._loaded: dict[str, tuple[Any, Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> Any:
        """The refiner `model` as an SDXL image-to-image pipeline, loaded on first use."""
        with self._lock:
            if model not in self._loaded:
                pipe, release = self._load(model)
                try:
                    self._loaded[model] = (_as_img2img(model, pipe), release)
                except BaseException:
                    release()
                    raise
            return self._loaded[model][0]

    def close(self) -> None:
        """Drop every refiner and release its lease (the base pipeline is being unloaded)."""
        with self._lock:
            loaded, self._loaded = self._loaded, {}
        for _, release in loaded.values():
            release()


def attach(pipe: Any, refiners: Refiners) -> None:
    """Give the base pipeline `pipe` its refiner set (`generate_batch` finds it there)."""
    setattr(pipe, _ATTRIBUTE, refiners)


def refiners_of(pipe: Any) -> Refiners:
    """The refiner set attached to `pipe`; `InvalidInputError` if it has none (a pipeline loaded outside a worker)."""
    refiners = getattr(pipe, _ATTRIBUTE, None)
    if refiners is None:
        raise InvalidInputError("refiner: this pipeline was loaded without a model cache to load refiners from")
    return refiners


def close_refiners(pipe: Any) -> None:
    """Release the refiners attached to `pipe`, if any."""
    refiners = getattr(pipe, _ATTRIBUTE, None)
    if refiners is not None:
        refiners.close()


def _as_img2img(model: str, pipe: Any) -> Any:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    if traits_of(pipe).family is not Family.SDXL:
        raise InvalidInputError(f"refiner: {model} is not an SDXL model ({type(pipe).__name__})")
    if isinstance(pipe, StableDiffusionXLImg2ImgPipeline):
        return pipe
    # AutoPipelineForText2Image loads a refiner folder as the text-to-image class, sharing its modules; rebuild the
    # image-to-image pipeline around them. The UNet's conditioning width tells whether it takes an aesthetic score
    # (5 time ids, the refiner) or a target size (6 time ids, a base model used as refiner).
    unet, encoder = pipe.unet.config, pipe.text_encoder_2.config
    time_ids = (unet.projection_class_embeddings_input_dim - encoder.projection_dim) // unet.addition_time_embed_dim
    accepted = inspect.signature(StableDiffusionXLImg2ImgPipeline.__init__).parameters
    components = {name: module for name, module in pipe.components.items() if name in accepted}
    refiner = StableDiffusionXLImg2ImgPipeline(
        **components,
        requires_aesthetics_score=time_ids == 5,
        force_zeros_for_empty_prompt=bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
    )
    refiner.set_progress_bar_config(disable=True)
    return refiner
