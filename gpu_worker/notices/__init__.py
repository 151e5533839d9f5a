"""Spot and preemption notices from each cloud's metadata service, behind one small protocol."""

from .aws import AwsNotices, ImdsClient
from .azure import AzureNotices
from .base import Interruption, Notice, NoticeKind, NoticeSource
from .gcp import GcpNotices
from .registry import open_notice_source

__all__ = [
    "AwsNotices",
    "AzureNotices",
    "GcpNotices",
    "ImdsClient",
    "Interruption",
    "Notice",
    "NoticeKind",
    "NoticeSource",
    "open_notice_source",
]
