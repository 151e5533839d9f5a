"""A tiny but real Stable Diffusion pipeline with seeded random weights, built offline.

It has every component SD 1.5 has (UNet, VAE with a scale factor of 8, CLIP text encoder and tokenizer, PNDM
scheduler with SD's noise schedule), so it exercises the same code paths as a real model, but it is about 5 MB and
renders a 64x64 image in well under a second on a CPU. Its images are coloured noise, deterministic per seed.
The model ref `tiny` resolves to it; tests and local development use it instead of a download.

The other families are built the same way under their own refs (`tiny-sdxl`, `tiny-sdxl-refiner`, `tiny-sd3`,
`tiny-flux`, and `tiny-inpaint`, SD 1.x with a 9-channel inpainting UNet; see `gpu_worker.tiny_families`), sharing
this module's CLIP tokenizer and atomic build, and so are the tiny ControlNets and IP-Adapters (`TINY_ADAPTERS`,
see `gpu_worker.tiny_adapters`), which are folders of their own kind rather than pipelines.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gpu_worker.refs import TINY_ADAPTERS, TINY_MODEL, TINY_MODELS

# Marks a finished build. The directory only appears under its final name by an atomic rename once everything is
# written, so a directory without it is a leftover from something else (e.g. an interrupted copy).
_MARKER = "model_index.json"
_LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
_MAX_TOKENS = 77  # like every SD 1.x/2.x text encoder
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
# Words that become one token each, so ordinary prompts take roughly as many tokens as they do with real CLIP
# (about one per word) and the truncation warning fires where it would in production. Anything else falls back to
# one token per byte. Space-separated.
_WORDS = (
    "a an and at by for from in of on or the to with "
    "photo picture painting portrait drawing illustration render sketch art style "
    "cat dog bird horse fox owl fish dragon robot man woman girl boy person child face "
    "city street house castle forest tree flower garden mountain river lake sea ocean beach sky cloud sun moon star "
    "night day morning sunset light dark red blue green yellow orange purple black white gold silver "
    "beautiful detailed high quality realistic cinematic lighting sharp focus hdr masterpiece "
    "blurry ugly lowres bad worst watermark text"
)


def build_tiny_pipeline(path: Path, *, seed: int = 0, name: str = TINY_MODEL) -> None:
    """Build the tiny pipeline `name` (one of `TINY_MODELS`: `tiny` is SD 1.x; or one of `TINY_ADAPTERS`) with
    weights drawn from `seed` and save it (safetensors) into `path`.

    Does nothing if `path` already holds a finished build. The build happens in a temporary sibling directory that
    is renamed into place, so a crash never leaves a half-written model under `path` and concurrent builders are
    safe: the first rename wins and the others discard their copy.
    """
    if name not in TINY_MODELS + TINY_ADAPTERS:
        raise ValueError(f"no tiny model {name!r}; the tiny models are {', '.join(TINY_MODELS + TINY_ADAPTERS)}")
    path = Path(path)
    if is_built(path, name):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.build-", dir=path.parent))
    try:
        _build(staging, seed=seed, name=name)
        if is_built(path, name):  # another builder finished first; keep theirs, it may already be in use
            return
        if path.exists():  # an incomplete leftover: move it out of the way first
            _discard(path)
        try:
            os.rename(staging, path)
        except OSError:
            if not is_built(path, name):  # not a lost race with another builder: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def is_built(path: Path, name: str = TINY_MODEL) -> bool:
    """Whether `path` holds a finished build of the tiny model `name`."""
    from gpu_worker.tiny_adapters import ADAPTER_MARKERS

    return (Path(path) / ADAPTER_MARKERS.get(name, _MARKER)).is_file()


def _discard(path: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.stale-", dir=path.parent))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _build(directory: Path, *, seed: int, name: str) -> None:
    from transformers import CLIPTokenizer

    from gpu_worker.tiny_adapters import ADAPTER_BUILDERS
    from gpu_worker.tiny_families import FAMILY_BUILDERS

    if name in ADAPTER_BUILDERS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            ADAPTER_BUILDERS[name](directory)
        return
    vocab_path, merges_path, vocab = _write_tokenizer_files(directory / "_tokenizer_source")
    # Positional on purpose: transformers 4 names these `vocab_file, merges_file`, transformers 5 `vocab, merges`
    # (and silently ignores `vocab_file=`); both accept paths.
    tokenizer = CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=_MAX_TOKENS)

    # fork_rng: seeding the weights must not reseed the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _sd_pipeline(tokenizer, vocab) if name == TINY_MODEL else FAMILY_BUILDERS[name](tokenizer, _WORDS)
    pipe.save_pretrained(directory, safe_serialization=True)
    shutil.rmtree(directory / "_tokenizer_source")


def sd_unet(*, in_channels: int = 4) -> Any:
    """The tiny SD 1.x UNet (9 input channels for inpainting: latents, mask, masked-image latents)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,  # times vae_scale_factor 8 = 512 px default size, like SD 1.5
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def sd_pipeline(tokenizer: Any, *, inpaint: bool = False) -> Any:
    """The tiny SD 1.x pipeline around `tokenizer` (unsaved); `inpaint` makes it an inpainting model."""
    vocab = tokenizer.get_vocab()
    return _sd_pipeline(tokenizer, vocab, inpaint=inpaint)


def _sd_pipeline(tokenizer: Any, vocab: dict[str, int], *, inpaint: bool = False) -> Any:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = sd_unet(in_channels=9 if inpaint else 4)
    vae = AutoencoderKL(
        sample_size=512,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        # Four blocks → three 2x down/upsamplings → vae_scale_factor 8, like SD.
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=_MAX_TOKENS,
            hidden_act="quick_gelu",
            bos_token_id=vocab[_BOS],
            eos_token_id=vocab[_EOS],
            pad_token_id=vocab[_EOS],
        )
    )
    # SD 1.5's scheduler config, verbatim in the parts that matter.
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline_class = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    return pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _write_tokenizer_files(directory: Path) -> tuple[Path, Path, dict[str, int]]:
    """Write a byte-level BPE `vocab.json` and `merges.txt` in CLIP's layout; return their paths and the vocab."""
    from tokenizers.models import BPE
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*alphabet, *(f"{char}</w>" for char in alphabet)])}
    merges: list[tuple[str, str]] = []
    for word in _WORDS.split():
        # Merges are applied lowest rank first, so one word's merges can split another (`to` inside `photo`):
        # tokenize each word with the merges so far and chain whatever pieces come out into one token.
        bpe = BPE(vocab=dict(vocab), merges=list(merges), continuing_subword_prefix="", end_of_word_suffix="</w>")
        pieces = [token.value for token in bpe.tokenize(word)]
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged += piece
            vocab[merged] = len(vocab)
    for special in (_BOS, _EOS):  # last, as in real CLIP (49406, 49407)
        vocab[special] = len(vocab)

    directory.mkdir(parents=True)
    vocab_path = directory / "vocab.json"
    merges_path = directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("\n".join(["#version: 0.2", *(f"{a} {b}" for a, b in merges)]) + "\n", encoding="utf-8")
    return vocab_path, merges_path, vocab


def build_tiny_lora(path: Path, *, base: Path, seed: int = 0, rank: int = 4) -> None:
    """Build a LoRA for the tiny pipeline in `base` (any family) with random (non-zero) weights drawn from `seed`;
    save it into `path` as diffusers' `pytorch_lora_weights.safetensors`, the layout `load_lora_weights` reads.

    Made with PEFT like a trained LoRA, on the denoiser's attention projections (the UNet's, or the SD3/Flux
    transformer's); it visibly changes the tiny model's images. Does nothing if `path` already holds one.
    """
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    if (path / _LORA_WEIGHTS).is_file():
        return
    index = json.loads((Path(base) / _MARKER).read_text(encoding="utf-8"))
    folder = "unet" if "unet" in index else "transformer"
    denoiser = getattr(diffusers, index[folder][1]).from_pretrained(Path(base) / folder)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights=False,  # random A and B: a trained LoRA's effect, not PEFT's no-op start
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        denoiser.add_adapter(config)
    pipeline_class = getattr(diffusers, index["_class_name"])
    layers = {f"{folder}_lora_layers": get_peft_model_state_dict(denoiser)}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.build-", dir=path.parent))
    try:
        pipeline_class.save_lora_weights(staging, **layers, safe_serialization=True)
        if path.exists():
            _discard(path)
        os.rename(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
