"""Object keys every backend accepts: one validation shared by all of them."""

from __future__ import annotations

from storage.errors import InvalidKeyError

#: Longest key in UTF-8 bytes (S3 and GCS cap keys at 1024 bytes; Azure allows more).
MAX_KEY_BYTES = 1024


def validate_key(key: str) -> str:
    """Return `key` unchanged if every backend can store it safely; raise `InvalidKeyError` otherwise.

    A key is a '/'-separated relative path: not empty, at most `MAX_KEY_BYTES` UTF-8 bytes, no leading '/',
    no backslash, no control characters, and no empty, '.' or '..' segments. The last rules are stricter than S3
    needs, so that the same key means the same file under the local backend and can never leave its root.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"object key must be a str; got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("object key must not be empty")
    try:
        size_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyError(f"object key must be valid UTF-8; got {key!r:.80}") from None
    if size_bytes > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key must be at most {MAX_KEY_BYTES} UTF-8 bytes; got {size_bytes}")
    if key.startswith("/"):
        raise InvalidKeyError(f"object key must be relative (no leading '/'); got {key!r:.80}")
    if "\\" in key:
        raise InvalidKeyError(f"object key must not contain a backslash; got {key!r:.80}")
    if any(_is_control(char) for char in key):
        raise InvalidKeyError(f"object key must not contain control characters; got {key!r:.80}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"object key must not have empty, '.' or '..' segments; got {key!r:.80}")
    return key


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F
