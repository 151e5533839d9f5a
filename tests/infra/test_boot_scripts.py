"""The boot scripts of every cloud's worker and control hosts: they render as templatefile() renders them, are
valid shell, mount local NVMe at the model cache, set SDQ_IDLE_TIMEOUT_S, and run the right units."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.terraform import CLOUDS, Module

BOOT_SCRIPTS = {
    # cloud: {role: (resource type, name, attribute)}
    "aws": {
        "worker": ("aws_launch_template", "worker", "user_data"),
        "control": ("aws_instance", "control", "user_data"),
    },
    "azure": {
        "worker": ("azurerm_linux_virtual_machine_scale_set", "workers", "custom_data"),
        "control": ("azurerm_linux_virtual_machine", "control", "custom_data"),
    },
    "gcp": {
        "worker": ("google_compute_instance_template", "worker", "metadata"),
        "control": ("google_compute_instance", "control", "metadata"),
    },
}
NVME_MARKERS = {
    "aws": "Amazon EC2 NVMe Instance Storage",
    "azure": "Microsoft NVMe Direct Disk",
    "gcp": "google-local-nvme-ssd",
}


def _render(template: Path, names: set[str]) -> str:
    """Render a Terraform template the way templatefile() does, with a placeholder for each passed variable."""
    text = template.read_text()
    assert "%{" not in text, "template directives are not expected here"

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"  # an escaped shell ${...}
        name = match.group(1)
        assert name in names, f"{template.name} uses ${{{name}}}, which templatefile() does not pass"
        if name == "redis_ca_cert":
            return "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
        return "900" if name.endswith("_s") else f"placeholder-{name}"

    return re.sub(r"\$\$\{|\$\{([^}]*)\}", substitute, text)


def _boot_script(module: Module, role: str) -> tuple[str, str]:
    """(rendered template, templatefile() call) for `role` of `module`."""
    type_, name, attribute = BOOT_SCRIPTS[module.folder.name][role]
    value = module.resource(type_, name)[attribute]
    call = value["startup-script"] if isinstance(value, dict) else value
    found = re.search(r"templates/([\w.-]+\.tftpl)(.*)", call, re.S)
    assert found, call
    names = set(re.findall(r"(\w+)\s*=", found.group(2)))
    return _render(module.folder / "templates" / found.group(1), names), call


def _shell_parts(rendered: str) -> Iterator[str]:
    if rendered.startswith("#cloud-config"):
        config = yaml.safe_load(rendered)
        assert config["write_files"] and config["runcmd"]
        for item in config["write_files"]:
            if item["content"].startswith("#!/bin/bash"):
                yield item["content"]
    else:
        assert rendered.startswith("#!/bin/bash")
        yield rendered


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("role", ["worker", "control"])
def test_boot_scripts_render_and_are_valid_shell(modules: dict[str, Module], cloud: str, role: str) -> None:
    rendered, _ = _boot_script(modules[cloud], role)
    parts = list(_shell_parts(rendered))
    assert parts
    for script in parts:
        result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
        assert result.returncode == 0, f"{cloud} {role}: {result.stderr}"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_worker_boot_mounts_local_nvme_at_the_model_cache_and_sets_idle_timeout(
    modules: dict[str, Module], cloud: str
) -> None:
    rendered, call = _boot_script(modules[cloud], "worker")
    assert "idle_timeout_s = var.idle_timeout_s" in call
    assert "SDQ_IDLE_TIMEOUT_S=900" in rendered
    assert f"SDQ_RETIRE={cloud}" in rendered
    assert f"SDQ_SPOT={cloud}" in rendered
    assert "SDQ_CAPACITY_TYPE=spot" in rendered and "SDQ_INSTANCE_TYPE=$" in rendered, "costs are priced per type"
    assert "SDQ_MODEL_CACHE_DIR=/models" in rendered
    assert NVME_MARKERS[cloud] in rendered, "the local NVMe disks are found"
    assert re.search(r"mkfs\.ext4 .*\"\$device\"", rendered) and re.search(
        r"mount .*\"\$device\" \"\$mount_dir\"", rendered
    )
    assert modules[cloud].locals["model_cache_host_dir"].startswith("/mnt/")
    assert 'mount_dir="placeholder-model_cache_host_dir"' in rendered
    # The worker container: GPU, the mounted cache as /models, restarted on failure but not after an idle exit.
    assert "--gpus all" in rendered
    assert re.search(r"--volume (placeholder-model_cache_host_dir|\$mount_dir):/models ", rendered)
    assert "Restart=on-failure" in rendered
    assert re.search(r"docker run .*\b(worker)\b", rendered.replace("\\\n", " "))


@pytest.mark.parametrize("cloud", CLOUDS)
def test_control_boot_runs_api_controller_and_webhooks_against_the_group(
    modules: dict[str, Module], cloud: str
) -> None:
    rendered, _ = _boot_script(modules[cloud], "control")
    for role in ("api", "controller", "webhooks"):
        assert f"sdq@{role}.service" in rendered
    assert f"SDQ_PROVIDER={cloud}" in rendered
    assert "SDQ_MIN_WORKERS=0" in rendered
    group_setting = {"aws": "SDQ_AWS_ASG_NAME", "azure": "SDQ_AZURE_VMSS_NAME", "gcp": "SDQ_GCP_MIG_NAME"}[cloud]
    assert f"{group_setting}=placeholder-" in rendered
    assert "SDQ_AUTH=required" in rendered
    assert "SDQ_REDIS_URL=$redis_url" in rendered, "the Redis URL is read from the secret store at boot"
