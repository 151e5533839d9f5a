"""`LinkSigner`: links the local backend hands out, checked by the API's file route."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from storage import InvalidExpiryError, InvalidKeyError, InvalidSignatureError, LinkSigner, StorageConfigError

SECRET = b"s" * 32
NOW = 1_700_000_000.0


def _parts(url: str) -> tuple[str, str, str]:
    parsed = urlsplit(url)
    query = parse_qs(parsed.query)
    return unquote(parsed.path.removeprefix("/v1/files/")), query["expires"][0], query["signature"][0]


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET, "https://api.example.com/")


def test_link_names_the_key_expiry_and_an_unpadded_urlsafe_mac(signer: LinkSigner) -> None:
    url = signer.sign("jobs/j 1/0.png", expires_in=timedelta(hours=1), now=NOW)

    assert url.startswith("https://api.example.com/v1/files/jobs/j%201/0.png?expires=1700003600&signature=")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", _parts(url)[2])


def test_untouched_link_verifies_until_it_expires(signer: LinkSigner) -> None:
    key, expires, signature = _parts(signer.sign("a/b.png", expires_in=timedelta(seconds=60), now=NOW))

    signer.verify(key, expires, signature, now=NOW)
    signer.verify(key, expires, signature, now=NOW + 59)
    with pytest.raises(InvalidSignatureError, match="expired"):
        signer.verify(key, expires, signature, now=NOW + 60)


def test_tampered_signature_is_invalid(signer: LinkSigner) -> None:
    key, expires, signature = _parts(signer.sign("a/b.png", expires_in=timedelta(hours=1), now=NOW))
    tampered = ("A" if signature[0] != "A" else "B") + signature[1:]

    with pytest.raises(InvalidSignatureError, match="invalid"):
        signer.verify(key, expires, tampered, now=NOW)


@pytest.mark.parametrize("other_key", ["a/c.png", "a/b.png.exe", "A/b.png", "../a/b.png"])
def test_link_for_one_key_does_not_open_another(signer: LinkSigner, other_key: str) -> None:
    _, expires, signature = _parts(signer.sign("a/b.png", expires_in=timedelta(hours=1), now=NOW))

    with pytest.raises(InvalidSignatureError, match="invalid"):
        signer.verify(other_key, expires, signature, now=NOW)


@pytest.mark.parametrize("expires", ["1700999999", "01700003600", "1700003600.0", "-1", "", "\uff11\uff17"])
def test_extended_or_malformed_expiry_is_invalid(signer: LinkSigner, expires: str) -> None:
    key, _, signature = _parts(signer.sign("a/b.png", expires_in=timedelta(hours=1), now=NOW))

    with pytest.raises(InvalidSignatureError, match="invalid"):
        signer.verify(key, expires, signature, now=NOW)


@pytest.mark.parametrize("signature", ["", "ü" * 43, "x" * 1000])
def test_garbage_signature_is_invalid_not_a_crash(signer: LinkSigner, signature: str) -> None:
    key, expires, _ = _parts(signer.sign("a/b.png", expires_in=timedelta(hours=1), now=NOW))

    with pytest.raises(InvalidSignatureError, match="invalid"):
        signer.verify(key, expires, signature, now=NOW)


def test_link_from_another_secret_is_invalid(signer: LinkSigner) -> None:
    other = LinkSigner(b"o" * 32, "https://api.example.com")
    key, expires, signature = _parts(other.sign("a/b.png", expires_in=timedelta(hours=1), now=NOW))

    with pytest.raises(InvalidSignatureError, match="invalid"):
        signer.verify(key, expires, signature, now=NOW)


def test_sign_checks_key_and_expiry(signer: LinkSigner) -> None:
    with pytest.raises(InvalidKeyError):
        signer.sign("../etc/passwd", expires_in=timedelta(hours=1))
    with pytest.raises(InvalidExpiryError, match="7 days"):
        signer.sign("a", expires_in=timedelta(days=8))


@pytest.mark.parametrize(("secret", "base_url"), [(b"short", "https://x"), (SECRET, "api.example.com"), (SECRET, "")])
def test_weak_secret_or_non_http_base_url_is_refused(secret: bytes, base_url: str) -> None:
    with pytest.raises(StorageConfigError):
        LinkSigner(secret, base_url)


def test_repr_does_not_show_the_secret(signer: LinkSigner) -> None:
    assert "sss" not in repr(signer)
