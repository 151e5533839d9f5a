"""Choosing the torch device a worker runs on (`SDQ_DEVICE`)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` → the first CUDA device when there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"SDQ_DEVICE={name} but CUDA is not available on this machine")
    return device
