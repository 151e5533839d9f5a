"""The image pipelines of a loaded text-to-image pipeline, and the ControlNets and IP-Adapters they use.

Image-to-image, inpainting and ControlNet runs use diffusers' own pipelines for the model's family (SD 1.x/2.x and
SDXL: `StableDiffusion[XL][ControlNet][Img2Img|Inpaint]Pipeline`), made with `from_pipe` from the loaded pipeline:
they hold the very same UNet, VAE, text encoders and scheduler objects, so no weight is in memory twice (a test
compares their tensors' storage). A derived pipeline is made once per mode and ControlNet set and kept with the
base pipeline: `from_pipe` costs about 3 ms (signature inspection), not worth paying per call.

ControlNets are models of their own, loaded by reference through the model cache on first use, in the base's
device and dtype, and kept loaded (with their cache lease) like LoRAs: up to `max_controlnets`, least recently used
released first, together with the derived pipelines that hold them. IP-Adapters live in `gpu_worker.ip_adapter`.
Parking the base pipeline on the CPU releases all of these (they are reloaded on next use).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from producer.jobs import Scheduler

from .cache import CacheLease
from .conditioning import Mode
from .errors import InvalidInputError
from .ip_adapter import IpAdapters
from .schedulers import apply_scheduler

log = logging.getLogger(__name__)

_ATTRIBUTE = "_sdqueue_adapters"


class ImageAdapters:
    """ControlNets, IP-Adapters and derived image pipelines of one base pipeline (see the module doc)."""

    def __init__(
        self,
        pipe: Any,
        acquire: Callable[[str], CacheLease],
        *,
        max_controlnets: int = 4,
        acquire_ip_adapter: Callable[[str], CacheLease] | None = None,
    ) -> None:
        """`acquire` leases a ControlNet's folder by the name a job gives, `acquire_ip_adapter` (default: `acquire`)
        an IP-Adapter's: a catalog model resolves its own adapter names to their sources there."""
        self.pipe = pipe
        self.acquire = acquire
        self.max_controlnets = max_controlnets
        self.ip = IpAdapters(pipe, acquire_ip_adapter or acquire)
        self._controlnets: OrderedDict[str, tuple[Any, CacheLease]] = OrderedDict()
        self._derived: dict[tuple[Mode, tuple[str, ...]], Any] = {}

    @property
    def controlnets(self) -> list[str]:
        """ControlNets loaded, least recently used first."""
        return list(self._controlnets)

    def pipeline(self, mode: Mode, controlnets: Sequence[str] = ()) -> Any:
        """The pipeline that runs `mode` with `controlnets` (loaded here if needed): the base pipeline itself for
        plain text-to-image."""
        models = [self.controlnet(name, index) for index, name in enumerate(controlnets)]
        if mode is Mode.TEXT and not models:
            return self.pipe
        key = (mode, tuple(controlnets))
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derive(mode, models)
            self._derived[key] = derived
        return derived

    def controlnet(self, model: str, index: int = 0) -> Any:
        """The ControlNet `model`, loaded on first use; `index` names the request field in errors."""
        if model in self._controlnets:
            self._controlnets.move_to_end(model)
            return self._controlnets[model][0]
        from .pipelines import load_controlnet

        lease = self.acquire(model)
        try:
            unet = self.pipe.unet
            controlnet = load_controlnet(lease.path, name=model, device=unet.device, dtype=unet.dtype)
            _check_fits(controlnet, unet, f"controlnets.{index}.model", model)
        except BaseException:
            lease.release()
            raise
        self._controlnets[model] = (controlnet, lease)
        log.info("loaded ControlNet %s", model)
        self._trim(keep=model)
        return controlnet

    def close(self) -> None:
        """Release everything (the base pipeline is being parked or unloaded)."""
        self.ip.close()
        self._derived.clear()
        for _, lease in self._controlnets.values():
            lease.release()
        self._controlnets.clear()

    def _derive(self, mode: Mode, controlnets: list[Any]) -> Any:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

        auto = {
            Mode.TEXT: AutoPipelineForText2Image,
            Mode.IMAGE: AutoPipelineForImage2Image,
            Mode.INPAINT: AutoPipelineForInpainting,
        }[mode]
        extra: dict[str, Any] = {}
        if controlnets:
            extra["controlnet"] = controlnets[0] if len(controlnets) == 1 else list(controlnets)
        # The base may hold a job's scheduler: derive from the model's own, which `apply_scheduler` then keeps as the
        # derived pipeline's original.
        apply_scheduler(self.pipe, Scheduler.DEFAULT)
        try:
            derived = auto.from_pipe(self.pipe, **extra)
        except ValueError as exc:  # no such pipeline for this family (e.g. no ControlNet image-to-image for it)
            raise InvalidInputError(f"{mode.value}: {type(self.pipe).__name__} models cannot run it ({exc})") from exc
        derived.set_progress_bar_config(disable=True)
        return derived

    def _trim(self, *, keep: str) -> None:
        while len(self._controlnets) > self.max_controlnets:
            victim = next(name for name in self._controlnets if name != keep)
            self._controlnets.pop(victim)[1].release()
            # Derived pipelines hold their ControlNets: drop the victim's, or its weights stay in memory.
            self._derived = {key: pipe for key, pipe in self._derived.items() if victim not in key[1]}


def _check_fits(controlnet: Any, unet: Any, field: str, model: str) -> None:
    """A ControlNet is made for one UNet architecture: refuse one whose conditioning widths do not match."""
    for name in ("cross_attention_dim", "addition_embed_type", "projection_class_embeddings_input_dim"):
        if controlnet.config.get(name) != unet.config.get(name):
            raise InvalidInputError(f"{field}: {model} is not a ControlNet for this model ({name} differs)")


def attach_adapters(pipe: Any, adapters: ImageAdapters) -> None:
    """Give the base pipeline `pipe` its adapter set (`generate_batch` finds it there)."""
    setattr(pipe, _ATTRIBUTE, adapters)


def adapters_of(pipe: Any) -> ImageAdapters:
    """The adapter set attached to `pipe`; one without a model cache (ControlNets and IP-Adapters cannot be
    loaded then) if it has none."""
    adapters = getattr(pipe, _ATTRIBUTE, None)
    if adapters is None:

        def no_cache(model: str) -> CacheLease:
            raise InvalidInputError(f"{model}: this pipeline was loaded without a model cache to load adapters from")

        adapters = ImageAdapters(pipe, no_cache)
        attach_adapters(pipe, adapters)
    return adapters


def close_adapters(pipe: Any) -> None:
    """Release the adapters attached to `pipe`, if any."""
    adapters = getattr(pipe, _ATTRIBUTE, None)
    if adapters is not None:
        adapters.close()
