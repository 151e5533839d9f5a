"""`validate_key` and `validate_metadata`: what every backend accepts."""

from __future__ import annotations

import pytest

from storage import InvalidKeyError, InvalidMetadataError, validate_key, validate_metadata
from storage.metadata import MAX_METADATA_BYTES
from storage.object_keys import MAX_KEY_BYTES


@pytest.mark.parametrize("key", ["a", "jobs/j1/0.png", ".hidden", "a..b/c...d", "ü/漢字.png", "x" * MAX_KEY_BYTES])
def test_portable_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "leading '/'"),
        ("..", "'..' segments"),
        ("a/../../b", "'..' segments"),
        ("a/./b", "'..' segments"),
        ("a//b", "empty, '.'"),
        ("a/", "empty, '.'"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "control"),
        ("a\tb", "control"),
        ("a\x85b", "control"),
        ("x" * (MAX_KEY_BYTES + 1), "1024 UTF-8 bytes"),
        ("é" * 513, "1024 UTF-8 bytes"),
        ("a\udc80", "UTF-8"),
    ],
)
def test_unsafe_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError) as raised:
        validate_key(key)
    assert reason in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_non_str_key_is_refused() -> None:
    with pytest.raises(InvalidKeyError, match="must be a str"):
        validate_key(b"a")  # type: ignore[arg-type]


def test_metadata_is_copied_and_none_is_empty() -> None:
    given = {"job_id": "j1", "seed": "42", "prompt": "a cat, 4k"}
    assert validate_metadata(given) == given
    assert validate_metadata(given) is not given
    assert validate_metadata(None) == {}


@pytest.mark.parametrize(
    "metadata",
    [{"Job": "x"}, {"job-id": "x"}, {"1st": "x"}, {"": "x"}, {"a": "ü"}, {"a": "line\nbreak"}, {"a": 1}],
    ids=repr,
)
def test_metadata_some_backend_would_mangle_is_refused(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidMetadataError):
        validate_metadata(metadata)


def test_metadata_over_the_size_limit_is_refused() -> None:
    validate_metadata({"a": "x" * (MAX_METADATA_BYTES - 1)})
    with pytest.raises(InvalidMetadataError, match="2048 bytes"):
        validate_metadata({"a": "x" * MAX_METADATA_BYTES})
