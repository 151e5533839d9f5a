"""The worker's name patterns match whole names: a trailing newline is not a weights file nor a cached LoRA."""

from __future__ import annotations

from gpu_worker.refs import ModelRef
from gpu_worker.sources import weight_variant


def test_a_weights_file_name_with_a_trailing_newline_is_not_weights() -> None:
    assert weight_variant("diffusion_pytorch_model.fp16.safetensors") == "fp16"
    assert weight_variant("model.fp16-00001-of-00002.safetensors") == "fp16"
    assert weight_variant("diffusion_pytorch_model.fp16.safetensors\n") is None


def test_a_lora_name_with_a_trailing_newline_is_not_a_cache_name() -> None:
    assert ModelRef.parse_lora("my-style").source.value == "named"
    assert ModelRef.parse_lora("my-style\n").source.value != "named"
