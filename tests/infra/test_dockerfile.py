"""The Dockerfile's shape: multi-stage on a CUDA runtime image, a numeric non-root user, the model cache volume, a
HEALTHCHECK, `sdq` as the entry point, and a .dockerignore that keeps the sources in the build context."""

from __future__ import annotations

import re

from tests.infra.terraform import REPO


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+$", text, re.M)
    assert re.search(r"^USER 10001(:10001)?$", text, re.M), "non-root, numeric"
    assert re.search(r'^VOLUME \[.*"/models".*\]$', text, re.M)
    assert "SDQ_MODEL_CACHE_DIR=/models" in text
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[", text, re.M)
    assert re.search(r'^ENTRYPOINT \[.*"sdq"\]$', text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    for needed in ("producer", "gpu_worker", "storage", "pyproject.toml", "README.md", "infra_templates/docker"):
        assert needed not in ignored
