"""Fault injection for tests of the device process: imported by every Python started with this folder on its
PYTHONPATH (so by a spawned device process), it does nothing unless `SDQ_TEST_FAULT` asks for a fault.

`SDQ_TEST_FAULT` is JSON: `{"message": "...", "above_images": n}` raises `RuntimeError(message)` from the
denoiser when a call holds more than n images (the tiny SD UNet sees two samples per image, guidance on);
`{"message": "...", "while_exists": path}` raises it while `path` exists, and once it has, on every later call
of that process too: a sticky CUDA error breaks the process's context for good.
"""

from __future__ import annotations

import json
import os

_SPEC = os.environ.get("SDQ_TEST_FAULT")

if _SPEC:
    import torch

    _fault = json.loads(_SPEC)
    _broken: list[bool] = []

    def _raise(module: torch.nn.Module, args: tuple[object, ...]) -> None:
        if type(module).__name__ != "UNet2DConditionModel":
            return
        samples = getattr(args[0], "shape", (0,))[0]
        if "above_images" in _fault and samples > 2 * _fault["above_images"]:
            raise RuntimeError(_fault["message"])
        if "while_exists" in _fault and (_broken or os.path.exists(_fault["while_exists"])):
            _broken.append(True)
            raise RuntimeError(_fault["message"])

    torch.nn.modules.module.register_module_forward_pre_hook(_raise)
