"""IP-Adapters on a loaded pipeline: loaded once, switched on for the calls that use one and off for the others.

An IP-Adapter changes the UNet itself: its cross-attention processors gain key/value projections for image tokens,
and an image projection turns a CLIP image embedding into those tokens. Once loaded, every UNet call needs image
embeddings, so a call without an IP-Adapter must see the plain UNet again. diffusers' `unload_ip_adapter` would
throw the weights (and the image encoder, 600 MB for ViT-H) away and reset every processor to its default class;
here the plain processor set and each adapter's set are kept, and switching is an assignment of processor objects.

Reference images are encoded here, one per batch row, and handed to the pipeline as `ip_adapter_image_embeds`
(negatives first under classifier-free guidance, as diffusers' own `encode_image` makes them: zeros for a plain
IP-Adapter's image embeds; for IP-Adapter Plus and Full, whose resampler reads the encoder's penultimate hidden
states, those states and an all-zero pixel tensor's). FaceID adapters need a face model's embeddings and are
refused. diffusers has
no per-row references: `ip_adapter_image` reads a list of images as several references for every prompt, and its
`prepare_ip_adapter_image_embeds` repeats given embeddings once per row of the batch. `rows_as_given` replaces that
method, on the pipelines sdqueue calls, by one that takes the embeddings as they are.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .cache import CacheLease
from .errors import InvalidInputError, ModelLoadError
from .sources import first_line
from .tiny_adapters import IMAGE_ENCODER_FOLDER, IP_ADAPTER_WEIGHTS

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    processors: dict[str, Any]
    projection: Any
    encoder: Any
    image_processor: Any
    lease: CacheLease
    #: Whether its projection reads the encoder's hidden states (IP-Adapter Plus, Full) instead of its image embeds.
    hidden_states: bool
    #: Their negative under guidance, the hidden states of zero pixels: the same every call, made on first use.
    zero_states: torch.Tensor | None = None


class IpAdapters:
    """The IP-Adapters loaded into one pipeline's UNet (at most `max_loaded`; least recently used dropped first)."""

    def __init__(self, pipe: Any, acquire: Callable[[str], CacheLease], *, max_loaded: int = 2) -> None:
        self.pipe = pipe
        self.acquire = acquire
        self.max_loaded = max_loaded
        self.active: str | None = None
        self._plain: dict[str, Any] | None = None
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()

    @property
    def loaded(self) -> list[str]:
        """IP-Adapters loaded, least recently used first."""
        return list(self._loaded)

    def use(self, model: str | None, scale: float = 1.0) -> None:
        """Make `model` the active IP-Adapter at `scale` (None: the plain UNet)."""
        if model is None:
            self._switch_off()
            return
        if model not in self._loaded:
            self._load(model)
        self._loaded.move_to_end(model)
        state = self._loaded[model]
        unet = self.pipe.unet
        if self.active != model:
            # The projection first: a Plus resampler's own attention layers count among the UNet's processors.
            unet.encoder_hid_proj = state.projection
            unet.config.encoder_hid_dim_type = "ip_image_proj"
            unet.set_attn_processor(dict(state.processors))
            self.active = model
        self.pipe.set_ip_adapter_scale(scale)

    def encode(self, images: Sequence[Any], *, guidance: bool) -> list[torch.Tensor]:
        """`ip_adapter_image_embeds` for the active adapter: one reference image per batch row."""
        if self.active is None:
            raise RuntimeError("no IP-Adapter is active")
        state = self._loaded[self.active]
        pixels = state.image_processor(list(images), return_tensors="pt").pixel_values
        pixels = pixels.to(device=state.encoder.device, dtype=state.encoder.dtype)
        with torch.no_grad():
            if not state.hidden_states:
                embeds = state.encoder(pixels).image_embeds[:, None]  # (rows, 1 image, width)
            else:  # Plus and Full read the penultimate hidden states
                embeds = state.encoder(pixels, output_hidden_states=True).hidden_states[-2][:, None]
            if guidance:
                embeds = torch.cat([self._negatives(state, pixels, embeds).expand_as(embeds), embeds])
        return [embeds]

    @staticmethod
    def _negatives(state: _Loaded, pixels: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """The negative of one row under guidance: zeros for image embeds; for hidden states, those of zero pixels
        (computed once per adapter: they do not change)."""
        if not state.hidden_states:
            return torch.zeros_like(embeds[:1])
        if state.zero_states is None:
            zero = torch.zeros_like(pixels[:1])
            state.zero_states = state.encoder(zero, output_hidden_states=True).hidden_states[-2][:, None]
        return state.zero_states

    def close(self) -> None:
        """Put the plain UNet back and release every adapter (the pipeline is parked or dropped)."""
        self._switch_off()
        for state in self._loaded.values():
            state.lease.release()
        self._loaded.clear()

    def _switch_off(self) -> None:
        if self.active is None:
            return
        unet = self.pipe.unet
        assert self._plain is not None
        unet.encoder_hid_proj = None  # first, as in `use`
        unet.config.encoder_hid_dim_type = None
        unet.set_attn_processor(dict(self._plain))
        self.active = None

    def _load(self, model: str) -> None:
        from transformers import CLIPImageProcessor

        from .pipelines import load_image_encoder

        self._switch_off()  # diffusers builds the adapter's processors from the plain ones
        unet = self.pipe.unet
        if self._plain is None:
            self._plain = dict(unet.attn_processors)
        lease = self.acquire(model)
        try:
            weights = _weights_file(lease.path, model, IP_ADAPTER_WEIGHTS)
            encoder = load_image_encoder(
                lease.path / IMAGE_ENCODER_FOLDER, name=model, device=unet.device, dtype=unet.dtype
            )
            try:
                self.pipe.load_ip_adapter(
                    str(lease.path), subfolder="", weight_name=weights, image_encoder_folder=None, local_files_only=True
                )
            except Exception as exc:
                raise ModelLoadError(f"ip_adapter.model: {model} failed to load ({first_line(exc)})") from exc
            size = int(encoder.config.image_size)
            state = _Loaded(
                processors=dict(unet.attn_processors),
                projection=unet.encoder_hid_proj,
                encoder=encoder,
                image_processor=CLIPImageProcessor(size=size, crop_size=size),
                lease=lease,
                hidden_states=_reads_hidden_states(unet.encoder_hid_proj, model),
            )
            _check_widths(state, model)
        except BaseException:
            self._restore_plain()
            lease.release()
            raise
        self._loaded[model] = state
        self.active = model
        log.info("loaded IP-Adapter %s", model)
        self._trim(keep=model)

    def _restore_plain(self) -> None:
        self.active = "?"  # whatever half-loaded state is there, put the plain UNet back
        self._switch_off()

    def _trim(self, *, keep: str) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next(name for name in self._loaded if name != keep)
            self._loaded.pop(victim).lease.release()


def rows_as_given(pipe: Any) -> None:
    """Make `pipe` take `ip_adapter_image_embeds` as one row per image of the batch (see the module doc)."""

    def prepare_ip_adapter_image_embeds(
        ip_adapter_image: Any, ip_adapter_image_embeds: Any, device: Any, *args: Any, **kwargs: Any
    ) -> list[torch.Tensor]:
        if ip_adapter_image_embeds is None:
            raise ValueError("sdqueue passes IP-Adapter references as per-row embeddings only")
        return [embeds.to(device=device) for embeds in ip_adapter_image_embeds]

    pipe.prepare_ip_adapter_image_embeds = prepare_ip_adapter_image_embeds


def _layers(projection: Any) -> list[Any]:
    """The image projection of each IP-Adapter in the UNet's `encoder_hid_proj` (diffusers wraps even one)."""
    return list(getattr(projection, "image_projection_layers", [projection]))


def _reads_hidden_states(projection: Any, model: str) -> bool:
    """Whether the IP-Adapter whose image projection diffusers loaded as `projection` reads the encoder's hidden
    states (Plus, Full) rather than its image embeds; FaceID adapters, which read face embeddings from a separate
    face model (insightface), are refused."""
    from diffusers.models.embeddings import (
        ImageProjection,
        IPAdapterFaceIDImageProjection,
        IPAdapterFaceIDPlusImageProjection,
    )

    layers = _layers(projection)
    if any(isinstance(layer, (IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection)) for layer in layers):
        raise InvalidInputError(
            f"ip_adapter.model: {model} is a FaceID IP-Adapter, which needs face embeddings from a face recognition"
            " model; sdqueue runs IP-Adapters that read a reference image (plain, Plus, Full)"
        )
    return not all(isinstance(layer, ImageProjection) for layer in layers)


def _check_widths(state: _Loaded, model: str) -> None:
    """Raise `ModelLoadError` unless the encoder's features are as wide as the projection reads: a Plus adapter
    reads its hidden states, a plain one its image embeds. (h94's SDXL `*_vit-h` adapters take the ViT-H encoder
    of models/image_encoder, not the ViT-bigG one beside them in sdxl_models/.)"""
    config = state.encoder.config
    given = int(config.hidden_size if state.hidden_states else config.projection_dim)
    for layer in _layers(state.projection):
        first = next(module for module in layer.modules() if isinstance(module, torch.nn.Linear))
        if first.in_features != given:
            what = "hidden states" if state.hidden_states else "image embeds"
            raise ModelLoadError(
                f"ip_adapter.model: {model} reads image features {first.in_features} wide, but the {what} of its"
                f" {IMAGE_ENCODER_FOLDER}/ are {given} wide: it needs the image encoder it was trained with"
            )


def _weights_file(path: Any, model: str, preferred: str) -> str:
    """The IP-Adapter weights in `path`: `preferred` if there, else its only top-level safetensors file."""
    if (path / preferred).is_file():
        return preferred
    files = sorted(p.name for p in path.glob("*.safetensors"))
    if len(files) != 1:
        raise InvalidInputError(
            f"ip_adapter.model: {model} must hold one IP-Adapter .safetensors file and an {IMAGE_ENCODER_FOLDER}/"
            f" folder (found {len(files)} weight files)"
        )
    return files[0]
