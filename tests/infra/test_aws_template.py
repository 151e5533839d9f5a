"""infra_templates/aws: an all-spot worker group from zero whose size Terraform leaves to the controller, IMDSv2,
encrypted disks, no SSH, bucket lifecycle rules, TLS + AUTH Redis and least-privilege IAM."""

from __future__ import annotations

import re
from typing import Any

from tests.infra.terraform import Module, bare, block, ignored_changes


def test_aws_worker_group_is_all_spot_from_zero(modules: dict[str, Module]) -> None:
    aws = modules["aws"]
    asg = aws.resource("aws_autoscaling_group", "workers")
    assert asg["min_size"] == 0
    assert asg["desired_capacity"] == 0
    assert "desired_capacity" in ignored_changes(asg), "terraform apply must not undo the controller's capacity"
    assert asg["protect_from_scale_in"] is True, "the group itself must never terminate a busy worker"
    assert "AZRebalance" in asg["suspended_processes"]
    distribution = block(block(asg, "mixed_instances_policy"), "instances_distribution")
    assert distribution["on_demand_base_capacity"] == 0
    assert distribution["on_demand_percentage_above_base_capacity"] == 0
    assert distribution["spot_allocation_strategy"] == "price-capacity-optimized"
    # Every allowed type has NVMe instance store for the model cache (g4dn/g5/g6 and their "d" relatives).
    for instance_type in aws.default("worker_instance_types"):
        assert re.match(r"^(g4dn|g5|g6|g6e|p4d|p5)\.", instance_type), instance_type


def test_aws_hosts_require_imdsv2_encrypt_disks_and_allow_no_ssh(modules: dict[str, Module]) -> None:
    aws = modules["aws"]
    template = aws.resource("aws_launch_template", "worker")
    control = aws.resource("aws_instance", "control")
    for host in (template, control):
        assert block(host, "metadata_options")["http_tokens"] == "required"
        assert block(host, "metadata_options")["http_put_response_hop_limit"] == 1
        assert "key_name" not in host, "no SSH key pairs"
    assert block(block(template, "block_device_mappings"), "ebs")["encrypted"] is True
    assert block(control, "root_block_device")["encrypted"] is True
    assert control["associate_public_ip_address"] is False
    assert "instance_market_options" not in control, "the control instance runs on demand"
    for name, group in aws.all("aws_security_group").items():
        for rule in group.get("ingress", []):
            ports = (rule["from_port"], rule["to_port"])
            assert 22 not in ports, f"{name} opens SSH"
            assert not (all(isinstance(p, int) for p in ports) and ports[0] <= 22 <= ports[1]), f"{name} opens SSH"


def test_aws_bucket_lifecycle_and_encryption(modules: dict[str, Module]) -> None:
    aws = modules["aws"]
    rules = {rule["id"]: rule for rule in aws.resource("aws_s3_bucket_lifecycle_configuration", "objects")["rule"]}
    outputs, checkpoints = rules["expire-outputs"], rules["expire-checkpoints"]
    assert block(outputs, "filter")["prefix"].endswith("/jobs/")
    assert bare(block(outputs, "expiration")["days"]) == "var.output_retention_days"
    assert block(checkpoints, "filter")["prefix"].endswith("/checkpoints/")
    assert bare(block(checkpoints, "expiration")["days"]) == "var.checkpoint_retention_days"
    assert all(rule["status"] == "Enabled" for rule in rules.values())
    sse = aws.resource("aws_s3_bucket_server_side_encryption_configuration", "objects")
    assert block(block(sse, "rule"), "apply_server_side_encryption_by_default")["sse_algorithm"] == "aws:kms"
    public = aws.resource("aws_s3_bucket_public_access_block", "objects")
    assert all(public[flag] is True for flag in ("block_public_acls", "block_public_policy", "restrict_public_buckets"))


def test_aws_redis_uses_tls_auth_and_kms(modules: dict[str, Module]) -> None:
    redis = modules["aws"].resource("aws_elasticache_replication_group", "redis")
    assert redis["transit_encryption_enabled"] is True
    assert redis["at_rest_encryption_enabled"] is True
    assert redis["auth_token"] and redis["kms_key_id"]
    url = modules["aws"].resource("aws_secretsmanager_secret_version", "redis_url")["secret_string"]
    assert url.startswith("rediss://:"), "TLS + AUTH in the URL every process reads"


def _statements(module: Module) -> dict[str, list[dict[str, Any]]]:
    """Each policy document's statements, the optional (`dynamic`) ones included."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, doc in module.data["aws_iam_policy_document"].items():
        optional = [block(d["statement"], "content") for d in doc.get("dynamic", []) if "statement" in d]
        found[name] = [*doc["statement"], *optional]
    return found


def test_aws_identities_are_least_privilege(modules: dict[str, Module]) -> None:
    statements = _statements(modules["aws"])
    for document, listed in statements.items():
        for statement in listed:
            for action in statement.get("actions", []):
                assert "*" not in action, f"{document}: wildcard action {action}"
            if statement.get("effect", "Allow") == "Allow" and statement.get("resources") == ["*"]:
                # Only calls IAM cannot scope to a resource may use "*".
                unscopable = ("autoscaling:DescribeAutoScalingGroups", "ecr:GetAuthorizationToken")
                assert all(action in unscopable for action in statement["actions"]), statement
    by_sid = {document: {s.get("sid"): s for s in listed} for document, listed in statements.items()}
    retire = by_sid["worker"]["SelfRetire"]
    assert retire["actions"] == ["autoscaling:TerminateInstanceInAutoScalingGroup"]
    assert retire["resources"] == ["${aws_autoscaling_group.workers.arn}"]
    assert block(retire, "condition")["variable"] == "autoscaling:ResourceTag/sdqueue:group"
    raise_ = by_sid["control"]["RaiseWorkerCapacity"]
    assert raise_["actions"] == ["autoscaling:SetDesiredCapacity"]
    assert raise_["resources"] == ["${aws_autoscaling_group.workers.arn}"]
    # Objects: only under the prefix; the control side only reads outputs.
    assert all("/${local.prefix}/" in r for r in by_sid["worker"]["ObjectsUnderPrefix"]["resources"])
    assert by_sid["control"]["PresignOutputs"]["actions"] == ["s3:GetObject"]
    assert all(r.endswith("/jobs/*") for r in by_sid["control"]["PresignOutputs"]["resources"])
    ecr_pull = by_sid["worker"]["PullTheImage"]
    assert ecr_pull["resources"] == ["${statement.value}"], "pull from the one repository only"
    control_actions = {a for s in statements["control"] for a in s["actions"]}
    assert not control_actions & {"s3:PutObject", "s3:DeleteObject", "autoscaling:TerminateInstanceInAutoScalingGroup"}


def test_aws_uploaded_and_prepared_inputs_expire(modules: dict[str, Module]) -> None:
    rules = {r["id"]: r for r in modules["aws"].resource("aws_s3_bucket_lifecycle_configuration", "objects")["rule"]}
    for prefix in ("uploads", "inputs"):
        rule = rules[f"expire-{prefix}"]
        assert block(rule, "filter")["prefix"].endswith(f"/{prefix}/") and rule["status"] == "Enabled"
        assert bare(block(rule, "expiration")["days"]) == "var.input_retention_days"
