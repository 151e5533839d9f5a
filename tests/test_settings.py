"""Settings shared by several deployables: the cloud endpoints and comma-separated lists."""

from __future__ import annotations

import pytest

from gpu_worker.settings import WorkerSettings
from producer.setting_types import CloudEndpointSettings
from producer.settings import ApiSettings, ControllerSettings
from producer.webhooks.settings import WebhookSettings


def test_the_controller_and_the_worker_read_the_same_cloud_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SDQ_AWS_ENDPOINT_URL", "SDQ_AZURE_MANAGEMENT_URL", "SDQ_GCP_COMPUTE_URL"):
        monkeypatch.delenv(name, raising=False)
    for deployable in (ControllerSettings, WorkerSettings):
        assert issubclass(deployable, CloudEndpointSettings)
        defaults = deployable()
        assert defaults.aws_endpoint_url is None
        assert defaults.azure_management_url == "https://management.azure.com"
        assert defaults.gcp_compute_url == "https://compute.googleapis.com"
    monkeypatch.setenv("SDQ_AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SDQ_AZURE_MANAGEMENT_URL", "http://127.0.0.1:2")
    monkeypatch.setenv("SDQ_GCP_COMPUTE_URL", "http://127.0.0.1:3")
    for deployable in (ControllerSettings, WorkerSettings):
        settings = deployable()
        assert (settings.aws_endpoint_url, settings.azure_management_url, settings.gcp_compute_url) == (
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
        )


def test_list_settings_are_comma_separated_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDQ_WEBHOOK_ALLOW", " 127.0.0.1/32, ::1 ,")
    monkeypatch.setenv("SDQ_ALLOWED_MODELS", "tiny,sdxl")
    monkeypatch.setenv("SDQ_INBOUND_WEBHOOK_SECRETS", "whsec_a,whsec_b")
    monkeypatch.setenv("SDQ_WEBHOOK_SECRETS", "whsec_c")
    monkeypatch.setenv("SDQ_WEBHOOK_RETRY_SCHEDULE_S", "0, 5,300")
    monkeypatch.setenv("SDQ_PRELOAD_MODELS", "tiny")
    api, webhooks = ApiSettings(), WebhookSettings()
    assert api.webhook_allow == ["127.0.0.1/32", "::1"]
    assert api.allowed_models == ["tiny", "sdxl"]
    assert [s.get_secret_value() for s in api.inbound_webhook_secrets] == ["whsec_a", "whsec_b"]
    assert [s.get_secret_value() for s in webhooks.webhook_secrets] == ["whsec_c"]
    assert webhooks.webhook_retry_schedule_s == [0.0, 5.0, 300.0]
    assert WorkerSettings().preload_models == ["tiny"]
    # Passed in code, a list stays a list.
    assert ApiSettings(allowed_models=["a"]).allowed_models == ["a"]
