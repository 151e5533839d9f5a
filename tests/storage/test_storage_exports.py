"""The public surface of `storage`, and what importing it must not drag in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import storage

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("boto3", "botocore", "azure", "google", "torch", "diffusers", "gpu_worker", "producer", "moto")


def test_all_is_sorted_and_complete() -> None:
    assert storage.__all__ == sorted(storage.__all__)
    assert all(hasattr(storage, name) for name in storage.__all__)
    assert {"LinkSigner", "LocalStore", "ObjectStore", "Presigner", "check_expiry", "open_store"} <= set(
        storage.__all__
    )


def test_importing_storage_imports_no_sdk_and_nothing_of_the_other_packages() -> None:
    code = f"import sys, storage; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
