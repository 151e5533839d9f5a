"""Standard Webhooks signatures, checked with the reference verifier (`standardwebhooks`)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from producer.webhooks.signing import SignatureError, new_secret, secret_key, signed_headers, verify

BODY = json.dumps({"type": "job.succeeded", "data": {"id": "abc"}}).encode()


def test_a_signed_message_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "msg_1", BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_the_reference_library_rejects_a_tampered_body_a_stale_timestamp_and_a_wrong_secret() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "msg_1", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"abc", b"abd"), headers)
    stale = signed_headers([secret], "msg_1", BODY, now_s=time.time() - 6 * 60)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, stale)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_2"})


def test_during_a_rotation_each_message_carries_a_signature_per_secret() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers([old, new], "msg_1", BODY)
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)


def test_our_verifier_accepts_what_the_reference_signs_and_rejects_what_it_should() -> None:
    secret = new_secret()
    reference = Webhook(secret)
    now = int(time.time())
    signature = reference.sign("msg_9", datetime.fromtimestamp(now, tz=timezone.utc), BODY.decode())
    headers = {"Webhook-Id": "msg_9", "Webhook-Timestamp": str(now), "Webhook-Signature": signature}
    assert verify([new_secret(), secret], headers, BODY) == "msg_9"
    cases = {
        "tampered": (headers, BODY + b" "),
        "stale": ({**headers, "Webhook-Timestamp": str(now - 301)}, BODY),
        "future": ({**headers, "Webhook-Timestamp": str(now + 301)}, BODY),
        "missing": ({"Webhook-Id": "msg_9"}, BODY),
        "not a number": ({**headers, "Webhook-Timestamp": "soon"}, BODY),
        "other scheme": ({**headers, "Webhook-Signature": "v1a,abc"}, BODY),
    }
    for name, (sent, body) in cases.items():
        with pytest.raises(SignatureError):
            verify([secret], sent, body)
            pytest.fail(name)
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        verify([new_secret()], headers, BODY)


@pytest.mark.parametrize("bad", ["abc", "whsec_", "whsec_c2hvcnQ="])
def test_malformed_or_short_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)
