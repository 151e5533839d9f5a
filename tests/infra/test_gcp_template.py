"""infra_templates/gcp: a spot managed instance group from zero with local NVMe SSD, no SSH, AUTH + TLS Redis,
bucket lifecycle rules and IAM bindings scoped by condition."""

from __future__ import annotations

from tests.infra.terraform import Module, bare, block, ignored_changes


def test_gcp_worker_group_is_spot_from_zero_with_local_ssd(modules: dict[str, Module]) -> None:
    gcp = modules["gcp"]
    template = gcp.resource("google_compute_instance_template", "worker")
    scheduling = block(template, "scheduling")
    assert scheduling["provisioning_model"] == "SPOT"
    assert scheduling["instance_termination_action"] == "DELETE"
    assert scheduling["automatic_restart"] is False
    local_ssd = block(template["dynamic"][0], "disk")["content"][0]
    assert local_ssd["disk_type"] == "local-ssd" and local_ssd["interface"] == "NVME"
    for nic in template["network_interface"]:
        assert "access_config" not in nic, "no external IP"
    metadata = template["metadata"]
    assert metadata["block-project-ssh-keys"] == "true"
    mig = gcp.resource("google_compute_region_instance_group_manager", "workers")
    assert mig["target_size"] == 0
    assert "target_size" in ignored_changes(mig)
    assert block(mig, "update_policy")["type"] == "OPPORTUNISTIC", "never replace a busy worker"
    assert not gcp.all("google_compute_region_autoscaler"), "the controller, not an autoscaler, sizes the group"


def test_gcp_no_ssh_redis_and_lifecycle(modules: dict[str, Module]) -> None:
    gcp = modules["gcp"]
    for name, rule in gcp.all("google_compute_firewall").items():
        for allow in rule.get("allow", []):
            assert "22" not in allow.get("ports", []), f"{name} opens SSH"
    redis = gcp.resource("google_redis_instance", "this")
    assert redis["auth_enabled"] is True
    assert redis["transit_encryption_mode"] == "SERVER_AUTHENTICATION"
    bucket = gcp.resource("google_storage_bucket", "objects")
    assert bucket["public_access_prevention"] == "enforced"
    ages = {
        block(rule, "condition").get("matches_prefix", [""])[0].rsplit("/", 2)[-2]: block(rule, "condition")["age"]
        for rule in bucket["lifecycle_rule"]
        if "age" in block(rule, "condition")
    }
    assert bare(ages["jobs"]) == "var.output_retention_days"
    assert bare(ages["checkpoints"]) == "var.checkpoint_retention_days"


def test_gcp_identities_are_least_privilege(modules: dict[str, Module]) -> None:
    gcp = modules["gcp"]
    for name, role in gcp.all("google_project_iam_custom_role").items():
        for permission in role["permissions"]:
            assert "*" not in permission, f"{name}: {permission}"
    for name, binding in gcp.all("google_project_iam_member").items():
        assert "local.worker_group_name" in block(binding, "condition")["expression"], f"{name} is not scoped"
    for name, binding in gcp.all("google_storage_bucket_iam_member").items():
        assert "local.prefix" in block(binding, "condition")["expression"], f"{name} is not scoped to the prefix"
    assert "roles/owner" not in gcp.text and "roles/editor" not in gcp.text


def test_gcp_uploaded_and_prepared_inputs_expire(modules: dict[str, Module]) -> None:
    rules = modules["gcp"].resource("google_storage_bucket", "objects")["lifecycle_rule"]
    inputs = [block(r, "condition") for r in rules if "/uploads/" in str(block(r, "condition").get("matches_prefix"))]
    assert len(inputs) == 1 and bare(inputs[0]["age"]) == "var.input_retention_days"
    assert [p.rsplit("/", 2)[-2] for p in inputs[0]["matches_prefix"]] == ["uploads", "inputs"]
