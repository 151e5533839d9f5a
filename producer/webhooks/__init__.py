"""Webhooks: signed outbound events (Standard Webhooks), the SSRF guard, delivery with retries, the delivery log."""

from ..jobs import WebhookEvent, WebhookEventType
from .delivery import Deliverer, RetryPolicy, parse_retry_after, send_delivery
from .dispatch import Dispatcher
from .keyring import Keyring
from .log import Delivery, DeliveryAttempt, DeliveryList, DeliveryLog, DeliveryState
from .signing import SignatureError, new_secret, sign, signed_headers, verify
from .ssrf import Target, UrlPolicy, check_url, check_url_shape, forbidden_reason, system_resolver
from .transport import PinnedTransport
from .worker import run_webhooks

__all__ = [
    "Deliverer",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryList",
    "DeliveryLog",
    "DeliveryState",
    "Dispatcher",
    "Keyring",
    "PinnedTransport",
    "RetryPolicy",
    "SignatureError",
    "Target",
    "UrlPolicy",
    "WebhookEvent",
    "WebhookEventType",
    "check_url",
    "check_url_shape",
    "forbidden_reason",
    "new_secret",
    "parse_retry_after",
    "run_webhooks",
    "send_delivery",
    "sign",
    "signed_headers",
    "system_resolver",
    "verify",
]
