"""Import boundaries and the public surface."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_the_light_side_never_imports_torch_diffusers_or_the_worker() -> None:
    code = (
        "import sys, producer, producer.api, producer.cli, storage\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers',"
        " 'gpu_worker'})\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_what_the_worker_cli_imports_to_spawn_the_device_process_never_imports_torch() -> None:
    # `sdq worker` starts the device process before it imports torch, so that the child's imports overlap its own.
    code = (
        "import sys, gpu_worker.cli, gpu_worker.device.process\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers'})\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("package", ["producer", "storage", "gpu_worker"])
def test_all_is_sorted_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name
