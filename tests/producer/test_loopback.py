"""Open mode (no API keys) is for loopback only, and loopback is judged by the address, not by its spelling."""

from __future__ import annotations

import pytest

from producer.loopback import is_loopback_host
from producer.settings import ApiSettings

LOOPBACK = ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LOCALHOST."]
NOT_LOOPBACK = ["127.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "localhost.evil", ""]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback_host(host)
    assert not ApiSettings(host=host, auth="auto").auth_required
    assert not ApiSettings(host=host, auth="open").auth_required


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_names_that_only_look_like_loopback_require_keys(host: str) -> None:
    assert not is_loopback_host(host)
    assert ApiSettings(host=host, auth="auto").auth_required
    with pytest.raises(ValueError, match="loopback"):
        _ = ApiSettings(host=host, auth="open").auth_required
