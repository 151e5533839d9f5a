"""The parsed Terraform folders, once per session (parsing HCL is slow on a loaded machine)."""

from __future__ import annotations

import pytest

from tests.infra.terraform import CLOUDS, TEMPLATES, Module


@pytest.fixture(scope="session")
def modules() -> dict[str, Module]:
    """Each cloud's Terraform folder, parsed."""
    return {cloud: Module(TEMPLATES / cloud) for cloud in CLOUDS}
