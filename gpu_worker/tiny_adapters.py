"""Tiny ControlNets and IP-Adapters for the tiny SD 1.x and SDXL pipelines, built offline (see `gpu_worker.tiny`).

- `tiny-controlnet`, `tiny-sdxl-controlnet`: `ControlNetModel.from_unet` on the family's tiny UNet, saved with
  `save_pretrained` (config.json + safetensors), the layout of every ControlNet repository. `from_unet` leaves the
  zero convolutions at zero, as training starts; a trained ControlNet's are not, so they get random weights here,
  and the control image visibly changes the output.
- `tiny-ip-adapter`, `tiny-sdxl-ip-adapter`: the layout `IPAdapterMixin.load_ip_adapter` reads, as h94/IP-Adapter
  ships it: `ip_adapter.safetensors` with `image_proj.*` keys (the image projection: CLIP image embedding → 4 extra
  cross-attention tokens) and `ip_adapter.<n>.to_k_ip/to_v_ip.weight` keys (one pair per cross-attention layer,
  numbered 1, 3, 5, … in the UNet's processor order), beside `image_encoder/`, a tiny CLIP vision encoder.
- `tiny-ip-adapter-plus`, `tiny-sdxl-ip-adapter-plus`: the same with IP-Adapter Plus's image projection, a
  resampler over the encoder's hidden states, keyed as h94/IP-Adapter's `ip-adapter-plus_*` files key it.

The builders run inside `gpu_worker.tiny`'s seeded, forked RNG and write into the staging folder they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: The weights file of an IP-Adapter folder (any single top-level safetensors file is accepted too).
IP_ADAPTER_WEIGHTS = "ip_adapter.safetensors"
#: The folder of an IP-Adapter's CLIP image encoder, beside its weights (h94/IP-Adapter's layout).
IMAGE_ENCODER_FOLDER = "image_encoder"
_IMAGE_EMBED_DIM = 32  # the tiny CLIP vision encoder's projection width
_ENCODER_WIDTH = 32  # and its hidden states' (what IP-Adapter Plus reads)
_IP_TOKENS = 4  # image tokens per reference image, as in IP-Adapter (Plus: `_PLUS_TOKENS`)
_PLUS_TOKENS, _PLUS_WIDTH, _PLUS_DEPTH = 8, 64, 4  # the resampler's queries, width (one head) and blocks


def _unet(family: str) -> Any:
    if family == "sd":
        from gpu_worker.tiny import sd_unet

        return sd_unet()
    from gpu_worker.tiny_families import build_sdxl_unet

    return build_sdxl_unet()


def build_controlnet(directory: Path, family: str) -> None:
    """A ControlNet for the tiny `family` ("sd" or "sdxl") UNet, with non-zero zero-convolutions."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(_unet(family))
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.normal_(std=0.1)
            conv.bias.normal_(std=0.1)
        # The control image's embedding (added to the UNet's input features): He-initialized, so that the image's
        # features do not fade through its eight SiLU convolutions as they do at the default init.
        embedding = controlnet.controlnet_cond_embedding
        for conv in (embedding.conv_in, *embedding.blocks):
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        embedding.conv_out.weight.normal_(std=0.2)  # as large as the UNet's own input features
    controlnet.save_pretrained(directory, safe_serialization=True)


def build_ip_adapter(directory: Path, family: str, *, plus: bool = False) -> None:
    """An IP-Adapter (image projection + per-layer key/value projections) and its CLIP image encoder; `plus`: an
    IP-Adapter Plus, whose projection (a resampler) reads the encoder's penultimate hidden states."""
    from safetensors.torch import save_file

    unet = _unet(family)
    cross = int(unet.config.cross_attention_dim)
    encoder = image_encoder()
    weights = _plus_projection(cross) if plus else _projection(cross)
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: IP-Adapter adds image tokens to the cross-attention layers only
        hidden = _hidden_size(unet, name)
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.3
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.3
        key_id += 2
    directory.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in weights.items()}, str(directory / IP_ADAPTER_WEIGHTS))
    encoder.save_pretrained(directory / IMAGE_ENCODER_FOLDER, safe_serialization=True)


def image_encoder(width: int = _ENCODER_WIDTH) -> Any:
    """The tiny CLIP vision encoder of the tiny IP-Adapters, its hidden states `width` wide (random weights)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=64,
        projection_dim=_IMAGE_EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_channels=3,
    )
    return CLIPVisionModelWithProjection(config)


def _projection(cross: int) -> dict[str, torch.Tensor]:
    """IP-Adapter's image projection: the CLIP image embedding → `_IP_TOKENS` cross-attention tokens."""
    return {
        "image_proj.proj.weight": torch.randn(cross * _IP_TOKENS, _IMAGE_EMBED_DIM) * 0.2,
        "image_proj.proj.bias": torch.randn(cross * _IP_TOKENS) * 0.2,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }


def _plus_projection(cross: int) -> dict[str, torch.Tensor]:
    """IP-Adapter Plus's resampler, named as h94/IP-Adapter's `ip-adapter-plus_*.safetensors` name it (diffusers
    renames them as it loads): learned queries that attend over the encoder's hidden states in `_PLUS_DEPTH`
    blocks, then a projection to `_PLUS_TOKENS` cross-attention tokens."""
    width, inner, embed = _PLUS_WIDTH, _PLUS_WIDTH, _ENCODER_WIDTH  # one head of 64 (diffusers reads heads = q/64)

    def linear(rows: int, columns: int) -> torch.Tensor:
        return torch.randn(rows, columns) / columns**0.5

    weights = {
        "image_proj.latents": torch.randn(1, _PLUS_TOKENS, width) / width**0.5,
        "image_proj.proj_in.weight": linear(width, embed),
        "image_proj.proj_in.bias": torch.zeros(width),
        "image_proj.proj_out.weight": linear(cross, width) * 2,
        "image_proj.proj_out.bias": torch.randn(cross) * 0.2,
        "image_proj.norm_out.weight": torch.ones(cross),
        "image_proj.norm_out.bias": torch.zeros(cross),
    }
    for layer in range(_PLUS_DEPTH):
        block = f"image_proj.layers.{layer}"
        for norm in (f"{block}.0.norm1", f"{block}.0.norm2", f"{block}.1.0"):
            weights[f"{norm}.weight"], weights[f"{norm}.bias"] = torch.ones(width), torch.zeros(width)
        weights[f"{block}.0.to_q.weight"] = linear(inner, width)
        weights[f"{block}.0.to_kv.weight"] = linear(2 * inner, width)
        weights[f"{block}.0.to_out.weight"] = linear(width, inner)
        weights[f"{block}.1.1.weight"] = linear(4 * width, width)
        weights[f"{block}.1.3.weight"] = linear(width, 4 * width)
    return weights


def _hidden_size(unet: Any, processor: str) -> int:
    """The width of the attention layer `processor` names, as diffusers' IP-Adapter loader computes it."""
    blocks = list(unet.config.block_out_channels)
    if processor.startswith("mid_block"):
        return int(blocks[-1])
    index = int(processor.split(".")[1])
    return int(list(reversed(blocks))[index] if processor.startswith("up_blocks") else blocks[index])


#: Builder of each tiny adapter by model ref: staging folder → files written.
ADAPTER_BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-controlnet": lambda directory: build_controlnet(directory, "sd"),
    "tiny-ip-adapter": lambda directory: build_ip_adapter(directory, "sd"),
    "tiny-sdxl-controlnet": lambda directory: build_controlnet(directory, "sdxl"),
    "tiny-sdxl-ip-adapter": lambda directory: build_ip_adapter(directory, "sdxl"),
    "tiny-ip-adapter-plus": lambda directory: build_ip_adapter(directory, "sd", plus=True),
    "tiny-sdxl-ip-adapter-plus": lambda directory: build_ip_adapter(directory, "sdxl", plus=True),
}
#: The file whose presence marks a finished build of each tiny adapter (pipelines: `model_index.json`).
ADAPTER_MARKERS = {
    "tiny-controlnet": "config.json",
    "tiny-ip-adapter": IP_ADAPTER_WEIGHTS,
    "tiny-sdxl-controlnet": "config.json",
    "tiny-sdxl-ip-adapter": IP_ADAPTER_WEIGHTS,
    "tiny-ip-adapter-plus": IP_ADAPTER_WEIGHTS,
    "tiny-sdxl-ip-adapter-plus": IP_ADAPTER_WEIGHTS,
}
