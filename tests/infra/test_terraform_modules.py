"""What every cloud's Terraform folder has: the standard files, documented variables, the worker's idle timeout,
and checkpoints that expire before outputs."""

from __future__ import annotations

from tests.infra.terraform import CLOUDS, IDLE_TIMEOUT_S, TEMPLATES, Module


def test_every_cloud_has_the_standard_files(modules: dict[str, Module]) -> None:
    for cloud in CLOUDS:
        for name in ("versions.tf", "variables.tf", "main.tf", "outputs.tf"):
            assert (TEMPLATES / cloud / name).is_file(), f"{cloud}/{name}"
        assert modules[cloud].resources, f"{cloud}: no resources parsed"
        for variable, body in modules[cloud].variables.items():
            assert body.get("description"), f"{cloud}: variable {variable} has no description"


def test_idle_timeout_defaults_to_the_workers_default(modules: dict[str, Module]) -> None:
    for cloud in CLOUDS:
        assert modules[cloud].default("idle_timeout_s") == IDLE_TIMEOUT_S


def test_checkpoints_expire_before_outputs(modules: dict[str, Module]) -> None:
    for cloud in CLOUDS:
        outputs, checkpoints = (
            modules[cloud].default(v) for v in ("output_retention_days", "checkpoint_retention_days")
        )
        assert 0 < checkpoints < outputs, cloud
