"""infra_templates/azure: a spot VM Scale Set from zero, no SSH, TLS-only Redis, blob lifecycle rules and roles
scoped to the scale set."""

from __future__ import annotations

from tests.infra.terraform import Module, bare, block, ignored_changes


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
        assert bare(base["delete_after_days_since_modification_greater_than"]) == days
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


def test_azure_uploaded_and_prepared_inputs_expire(modules: dict[str, Module]) -> None:
    rules = {r["name"]: r for r in modules["azure"].resource("azurerm_storage_management_policy", "objects")["rule"]}
    for prefix in ("uploads", "inputs"):
        rule = rules[f"expire-{prefix}"]
        assert block(rule, "filters")["prefix_match"][0].endswith(f"/{prefix}/")
        base = block(block(rule, "actions"), "base_blob")
        assert bare(base["delete_after_days_since_modification_greater_than"]) == "var.input_retention_days"
