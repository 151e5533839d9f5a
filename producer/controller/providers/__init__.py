"""Capacity providers: a plain registry with lazy imports, so only the chosen cloud's SDK is ever imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import CapacityProvider, NoProvider, ProviderError

if TYPE_CHECKING:
    from ...settings import ControllerSettings

__all__ = ["CapacityProvider", "NoProvider", "ProviderError", "open_provider"]


def open_provider(settings: ControllerSettings) -> CapacityProvider:
    """The provider `SDQ_PROVIDER` names, configured from the controller's settings."""
    if settings.provider == "aws":
        from .aws import AutoScalingGroup

        assert settings.aws_asg_name  # the settings validator guarantees it
        return AutoScalingGroup(
            settings.aws_asg_name, region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
        )
    if settings.provider == "azure":
        from .azure import VirtualMachineScaleSet

        assert settings.azure_subscription_id and settings.azure_resource_group and settings.azure_vmss_name
        return VirtualMachineScaleSet(
            settings.azure_subscription_id,
            settings.azure_resource_group,
            settings.azure_vmss_name,
            management_url=settings.azure_management_url,
            max_capacity=settings.max_workers,
        )
    if settings.provider == "gcp":
        from .gcp import ManagedInstanceGroup

        assert settings.gcp_project and settings.gcp_mig_name
        return ManagedInstanceGroup(
            settings.gcp_project,
            settings.gcp_mig_name,
            zone=settings.gcp_zone,
            region=None if settings.gcp_zone else settings.gcp_region,
            compute_url=settings.gcp_compute_url,
            max_capacity=settings.max_workers,
        )
    return NoProvider(settings.provider)
