"""What every cloud's Terraform folder has: the standard files, documented variables, the worker's idle timeout,
checkpoints that expire before outputs, and a bucket CORS rule for the dashboard's uploads only where asked for."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.terraform import CLOUDS, IDLE_TIMEOUT_S, TEMPLATES, Module, bare, block


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


#: Whether the rule exists at all: a count or a dynamic block's for_each on the variable, empty without origins.
ONLY_WITH_ORIGINS = {
    "length(var.dashboard_origins) > 0 ? 1 : 0",
    "length(var.dashboard_origins) > 0 ? [var.dashboard_origins] : []",
}


def _dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The dynamic block `name` of `body`."""
    found = [entry[name] for entry in body.get("dynamic", []) if name in entry]
    assert len(found) == 1, f"no single dynamic {name!r} block"
    rule: dict[str, Any] = found[0]
    return rule


def _cors_rules(modules: dict[str, Module]) -> dict[str, tuple[str, dict[str, Any], str]]:
    """Per cloud: what decides whether the rule exists, the rule, and the expression of its origins."""
    aws = modules["aws"].resource("aws_s3_bucket_cors_configuration", "objects")
    account = modules["azure"].resource("azurerm_storage_account", "objects")
    azure = _dynamic(block(account, "blob_properties"), "cors_rule")
    gcp = _dynamic(modules["gcp"].resource("google_storage_bucket", "objects"), "cors")
    return {
        "aws": (aws["count"], block(aws, "cors_rule"), "allowed_origins"),
        "azure": (azure["for_each"], block(azure, "content"), "allowed_origins"),
        "gcp": (gcp["for_each"], block(gcp, "content"), "origin"),
    }


def test_the_bucket_cors_rule_exists_only_for_the_dashboard_origins_given(modules: dict[str, Module]) -> None:
    origins_of = {"aws": "var.dashboard_origins", "azure": "cors_rule.value", "gcp": "cors.value"}
    methods_of = {"aws": "allowed_methods", "azure": "allowed_methods", "gcp": "method"}
    exposed_of = {"aws": "expose_headers", "azure": "exposed_headers", "gcp": "response_header"}
    max_age_of = {"aws": "max_age_seconds", "azure": "max_age_in_seconds", "gcp": "max_age_seconds"}
    for cloud, (exists, rule, origins) in _cors_rules(modules).items():
        module = modules[cloud]
        assert module.default("dashboard_origins") == [], f"{cloud}: no CORS rule unless origins are given"
        assert bare(exists) in ONLY_WITH_ORIGINS, f"{cloud}: the rule must not exist without origins ({exists})"
        assert bare(rule[origins]) == origins_of[cloud], f"{cloud}: origins other than var.dashboard_origins"
        assert bare(rule[methods_of[cloud]]) == "local.cors_methods"
        assert set(module.locals["cors_methods"]) == {"PUT", "POST", "GET", "HEAD"}, cloud
        assert "etag" in {header.lower() for header in rule[exposed_of[cloud]]}, f"{cloud}: ETag not exposed"
        assert bare(rule[max_age_of[cloud]]) == "local.cors_max_age_s" and 0 < module.locals["cors_max_age_s"] <= 86400


def test_the_headers_each_upload_grant_sends_are_allowed(modules: dict[str, Module]) -> None:
    rules = {cloud: rule for cloud, (_, rule, _) in _cors_rules(modules).items()}
    # storage/uploads: S3 a POST form (Content-Type is a field), Azure x-ms-blob-type, GCS the signed length range.
    assert {h.lower() for h in rules["aws"]["allowed_headers"]} == {"content-type"}
    assert {h.lower() for h in rules["azure"]["allowed_headers"]} == {"content-type", "x-ms-blob-type"}
    assert {"content-type", "x-goog-content-length-range"} <= {h.lower() for h in rules["gcp"]["response_header"]}


@pytest.mark.parametrize(
    ("origin", "valid"),
    [
        ("https://sdq.example.com", True),
        ("http://localhost:8000", True),
        ("*", False),
        ("https://*.example.com", False),
        ("https://sdq.example.com/ui/", False),
        ("sdq.example.com", False),
    ],
)
def test_dashboard_origins_are_a_scheme_and_host_without_wildcards(
    modules: dict[str, Module], origin: str, valid: bool
) -> None:
    for cloud in CLOUDS:
        [validation] = modules[cloud].variables["dashboard_origins"]["validation"]
        # RE2 (Terraform's regex) and Python's re read this pattern alike: no backreferences or lookarounds.
        pattern = re.search(r'regex\("(.+?)", origin\)', validation["condition"])
        assert pattern, f"{cloud}: no regex in the validation"
        assert bool(re.fullmatch(pattern.group(1).replace("\\\\", "\\"), origin)) is valid, (cloud, origin)
