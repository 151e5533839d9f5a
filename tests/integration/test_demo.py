"""`sdq demo` end to end on the embedded default: embedded Redis, API and worker processes, gallery."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def test_the_demo_runs_jobs_writes_a_gallery_and_stops_everything(tmp_path: Path, model_cache: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDQ_")}
    env.update(SDQ_DATA_DIR=str(tmp_path / "data"), SDQ_MODEL_CACHE_DIR=str(model_cache), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "producer.cli", "demo", "--out", str(tmp_path / "out"), "--jobs", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    gallery = (tmp_path / "out" / "index.html").read_text()
    images = sorted(p for p in (tmp_path / "out").iterdir() if p.suffix in (".png", ".jpg", ".webp"))
    assert len(images) == 4  # three jobs, one of them with two images
    for image in images:
        assert image.name in gallery
        Image.open(image).verify()
    assert "succeeded" in result.stdout
    # Then an image-to-image and an inpainting job on the first picture, shown beside their inputs.
    image_jobs = tmp_path / "out" / "image-jobs"
    outputs = sorted(p.name for p in image_jobs.iterdir() if p.name != "mask.png")
    assert len(outputs) == 2 and all(f"image-jobs/{name}" in gallery for name in outputs)
    assert "(image-to-image)" in gallery and "(inpainted)" in gallery and 'class="input"' in gallery
    for name in outputs:
        with Image.open(image_jobs / name) as made:
            assert made.size == (128, 128)  # the first job's picture, at its size
    assert "/ui/" in result.stdout and "sdq up" in result.stdout  # the dashboard's URL, and how to get it back
    assert "/ui/#/gallery" in gallery
    # everything it started is gone: no embedded Redis left on the socket
    assert not (tmp_path / "data" / "redis.sock").exists()
