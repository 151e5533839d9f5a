"""Tiny SD inpainting, SDXL, SDXL refiner, SD3 and Flux pipelines with random weights, built offline (see
`gpu_worker.tiny`).

Each has its family's real component layout (SDXL: two CLIP encoders and text-time conditioning; the refiner: the
second encoder only and an aesthetic score; SD3: an MMDiT transformer, two projecting CLIP encoders and T5; Flux: a
Flux transformer, CLIP and T5) and real scheduler config (flow matching for SD3 and Flux), with every width cut to a
few channels. The VAEs downsample 8x like the real ones, so 64² renders on 8² latents: tens of milliseconds a step on
one CPU thread. The T5 tokenizer is a Unigram model over the same small word list as the CLIP one, made in memory.

The builders run inside `gpu_worker.tiny`'s seeded, forked RNG; they only construct, the caller saves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_T5_MAX_TOKENS = 512  # Flux's and SD3's `max_sequence_length` ceilings
_T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in every T5 vocabulary
#: SD3's and Flux's VAE: 16 latent channels, 8x downsampling, no quant convs.
_FLOW_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 8,
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


def t5_tokenizer(words: str) -> Any:
    """A T5 tokenizer (SentencePiece-style Unigram) whose pieces are `words` (space-separated) and single characters."""
    from transformers import T5TokenizerFast

    pieces = [(token, 0.0) for token in _T5_SPECIALS]
    pieces.append(("▁", -2.0))
    pieces += [(f"▁{word}", -1.0) for word in dict.fromkeys(words.split())]
    pieces += [(char, -5.0) for char in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=_T5_MAX_TOKENS)


def _t5_encoder(vocab_size: int, d_model: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _clip_config(clip: Any, *, hidden: int = 32, projection: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(clip),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=projection,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=clip.model_max_length,
        hidden_act="quick_gelu",
        bos_token_id=clip.bos_token_id,
        eos_token_id=clip.eos_token_id,
        pad_token_id=clip.eos_token_id,
    )


def _sdxl_vae() -> Any:
    from diffusers import AutoencoderKL

    # SDXL's VAE config in the parts that matter: scale 0.13025, and `force_upcast`, as the real one overflows in fp16.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def _sdxl_unet(*, cross_attention_dim: int, time_ids: int, pooled_dim: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128,  # x 8 = SDXL's 1024 px default
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=time_ids * 8 + pooled_dim,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
    )


def _sdxl_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_sd_inpaint(clip: Any) -> Any:
    """SD 1.x inpainting: `tiny` with a 9-channel UNet (noisy latents, the mask, the masked image's latents)."""
    from gpu_worker.tiny import sd_pipeline

    return sd_pipeline(clip, inpaint=True)


def build_sdxl(clip: Any) -> Any:
    """SDXL base: CLIP-L-like and CLIP-G-like encoders (the second projecting), a text-time-conditioned UNet."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = _clip_config(clip)
    return StableDiffusionXLPipeline(
        vae=_sdxl_vae(),
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=clip,
        tokenizer_2=clip,
        unet=build_sdxl_unet(),
        scheduler=_sdxl_scheduler(),
    )


def build_sdxl_unet() -> Any:
    """The tiny SDXL base UNet (also the base of the tiny SDXL ControlNet and IP-Adapter)."""
    # Both encoders' hidden states concatenated; 6 time ids (original size, crop, target size) + pooled.
    return _sdxl_unet(cross_attention_dim=64, time_ids=6, pooled_dim=32)


def build_sdxl_refiner(clip: Any) -> Any:
    """SDXL refiner: the second encoder only, and 5 time ids (original size, crop, aesthetic score)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    return StableDiffusionXLImg2ImgPipeline(
        vae=_sdxl_vae(),
        text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(clip)),
        tokenizer=None,
        tokenizer_2=clip,
        unet=_sdxl_unet(cross_attention_dim=32, time_ids=5, pooled_dim=32),
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def build_sd3(clip: Any, words: str) -> Any:
    """SD 3.x: an MMDiT transformer (patch 2, 16 latent channels), two projecting CLIP encoders and a T5 encoder."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    t5 = t5_tokenizer(words)
    config = _clip_config(clip)
    transformer = SD3Transformer2DModel(
        sample_size=128,  # latent side of the 1024 px default
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,  # T5's width; the CLIP states (2 x 32) are cut/padded to it by the pipeline
        caption_projection_dim=32,
        pooled_projection_dim=64,  # both CLIP pooled outputs
        pos_embed_max_size=128,  # 2048 px at patch 2 and 8x VAE: the API's largest side
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD 3's config
        vae=AutoencoderKL(**_FLOW_VAE, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=CLIPTextModelWithProjection(config),
        tokenizer=clip,
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer_2=clip,
        text_encoder_3=_t5_encoder(len(t5), 32),
        tokenizer_3=t5,
    )


def build_flux(clip: Any, words: str) -> Any:
    """Flux.1-dev-like: a Flux transformer with guidance embedding over 2x2-packed latents, CLIP pooled + T5."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    t5 = t5_tokenizer(words)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x the 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's width
        pooled_projection_dim=32,  # CLIP's
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
        guidance_embeds=True,  # dev (distilled guidance); schnell has none
    )
    # Flux.1's scheduler config: shift depends on the image's token count.
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=AutoencoderKL(**_FLOW_VAE, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(_clip_config(clip)),
        tokenizer=clip,
        text_encoder_2=_t5_encoder(len(t5), 32),
        tokenizer_2=t5,
    )


#: Builder of each tiny family by model ref: (CLIP tokenizer, word list) → an unsaved pipeline.
FAMILY_BUILDERS: dict[str, Callable[[Any, str], Any]] = {
    "tiny-flux": build_flux,
    "tiny-inpaint": lambda clip, words: build_sd_inpaint(clip),
    "tiny-sd3": build_sd3,
    "tiny-sdxl": lambda clip, words: build_sdxl(clip),
    "tiny-sdxl-refiner": lambda clip, words: build_sdxl_refiner(clip),
}
