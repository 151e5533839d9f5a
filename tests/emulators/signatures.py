"""Presigned URLs with a broken signature, to check that a server refuses them."""

from __future__ import annotations


def tamper_signature(url: str) -> str:
    """`url` with one character of its signature changed to a different value whatever the encoding: hex digests
    compare case-insensitively, so swapping `b` for `B` would change nothing."""
    for name in ("X-Amz-Signature=", "sig=", "signature=", "X-Goog-Signature="):
        start = url.find(name)
        if start >= 0:
            index = start + len(name)
            return url[:index] + ("1" if url[index] in "0" else "0") + url[index + 1 :]
    raise AssertionError(f"no signature in {url}")
