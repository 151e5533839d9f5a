"""Choosing the notice poller for `SDQ_SPOT`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import NoticeSource

if TYPE_CHECKING:
    from ..settings import WorkerSettings


def open_notice_source(settings: WorkerSettings) -> NoticeSource | None:
    """The poller for `settings.spot` (its metadata base URL from the settings), or None for `none`."""
    if settings.spot == "aws":
        from .aws import AwsNotices

        return AwsNotices(settings.aws_metadata_url)
    if settings.spot == "gcp":
        from .gcp import GcpNotices

        return GcpNotices(
            settings.gcp_metadata_url, notice_s=settings.spot_notice_s, wait_s=settings.spot_poll_interval_s
        )
    if settings.spot == "azure":
        from .azure import AzureNotices

        return AzureNotices(settings.azure_metadata_url, notice_s=settings.spot_notice_s)
    return None
