"""User metadata every backend accepts: one validation shared by all of them."""

from __future__ import annotations

import re
from collections.abc import Mapping

from storage.errors import InvalidMetadataError

#: Largest total size of names plus values in bytes (S3's limit for user metadata; Azure and GCS allow more).
MAX_METADATA_BYTES = 2048

# Lower case because S3 lower-cases names; no '-' because Azure names must be C# identifiers.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")
# Printable ASCII, because values travel as HTTP headers on S3 and Azure.
_VALUE = re.compile(r"[\x20-\x7e]*")


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return a copy of `metadata` if every backend stores it unchanged; raise `InvalidMetadataError` otherwise.

    Names are lower-case identifiers (`[a-z][a-z0-9_]*`), values printable ASCII, and names plus values
    total at most `MAX_METADATA_BYTES`.
    """
    if metadata is None:
        return {}
    checked: dict[str, str] = {}
    total_bytes = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidMetadataError(f"metadata names must match [a-z][a-z0-9_]* (max 128 chars); got {name!r:.80}")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise InvalidMetadataError(f"metadata value of {name!r} must be printable ASCII; got {value!r:.80}")
        total_bytes += len(name) + len(value)
        checked[name] = value
    if total_bytes > MAX_METADATA_BYTES:
        raise InvalidMetadataError(f"metadata must total at most {MAX_METADATA_BYTES} bytes; got {total_bytes}")
    return checked
