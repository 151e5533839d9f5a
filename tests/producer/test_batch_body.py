"""A batch body read as it streams in: the same batch whatever the chunking, refused at once when too big."""

from __future__ import annotations

import json

import pytest

from producer.batch_body import MAX_ITEM_VALUES, BatchValidationError, parse_body, parse_stream
from producer.jobs import MAX_BATCH_ITEMS

ITEMS = [{"prompt": f"p{i}", "guidance_scale": 1.5, "metadata": {"k": "v"}} for i in range(5)]
FORMS = {
    "array": ("application/json", json.dumps(ITEMS).encode()),
    "object": ("application/json", json.dumps({"defaults": {"steps": 2}, "items": ITEMS}).encode()),
    "json-lines": (
        "application/x-ndjson",
        b'{"defaults": {"steps": 2}}\n' + b"".join(json.dumps(i).encode() + b"\n" for i in ITEMS),
    ),
}


def _fields(body: bytes, content_type: str = "application/json") -> list[dict[str, str]]:
    with pytest.raises(BatchValidationError) as caught:
        parse_body(body, content_type)
    return caught.value.fields


@pytest.mark.parametrize(("content_type", "body"), FORMS.values(), ids=FORMS.keys())
def test_a_body_in_one_byte_chunks_is_the_batch_parsed_whole(content_type: str, body: bytes) -> None:
    chunks = iter([body[i : i + 1] for i in range(len(body))])
    batch = parse_stream(lambda: next(chunks, b""), content_type)
    assert batch == parse_body(body, content_type)
    assert list(batch.items) == ITEMS and isinstance(batch.items[0]["guidance_scale"], float)


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_the_item_cap_stops_reading_at_the_first_item_past_it(content_type: str) -> None:
    reads = 0
    chunk = b"{}\n" * 1000 if "ndjson" in content_type else b"{}," * 1000

    def read() -> bytes:
        nonlocal reads
        reads += 1
        if reads == 1 and "ndjson" not in content_type:
            return b"[" + chunk
        return chunk  # an endless body: only stopping early ends this

    with pytest.raises(BatchValidationError) as caught:
        parse_stream(read, content_type)
    assert "at most 10000 items" in caught.value.fields[0]["message"]
    assert reads == MAX_BATCH_ITEMS // 1000 + 1


def test_an_item_or_a_member_holding_too_many_values_is_refused_naming_it() -> None:
    wide = [0] * MAX_ITEM_VALUES
    assert _fields(json.dumps([{"prompt": "a"}, {"prompt": "b", "x": wide}]).encode())[0]["field"] == "items.1"
    assert _fields(json.dumps({"items": [{"prompt": "a"}], "metadata": {"a": wide}}).encode())[0]["field"] == "metadata"
    assert _fields(json.dumps({"x": wide}).encode() + b"\n", "application/x-ndjson")[0]["field"] == "items.0"
    assert _fields(b"[" * 100_000 + b"]" * 100_000)[0]["field"] == "items.0"  # nesting: each level is a value


def test_bad_json_and_bad_shapes_name_the_body() -> None:
    for body in [b"", b"[{}] x", b"[NaN]", b'{"prompt": "\xff"}', b"[{}", b"42"]:
        assert _fields(body)[0]["field"] == "body", body
    assert _fields(b'{"prompt": "a"}\n[1, \n', "application/x-ndjson") == [
        {"field": "body", "message": "line 2 is not valid JSON"}
    ]


def test_a_key_given_twice_counts_once_the_last_time() -> None:
    batch = parse_body(b'{"items": [{"prompt": "a"}], "items": [{"prompt": "b"}, {"prompt": "c"}]}', "")
    assert [i["prompt"] for i in batch.items] == ["b", "c"]


def test_a_number_too_long_to_read_is_refused_naming_the_body_not_a_500() -> None:
    # Python refuses int() of more than 4 300 digits; yajl's C backend met that as a SystemError (a 500).
    digits = b"9" * 5000
    for content_type, body in [
        ("application/json", b'{"items": [{"prompt": "a", "seed": ' + digits + b"}]}"),
        ("application/json", b"[{}, " + digits + b"]"),
        ("application/x-ndjson", b'{"prompt": "a", "seed": -' + digits + b"}\n"),
    ]:
        (error,) = _fields(body, content_type)
        assert error["field"] == "body" and "digits" in error["message"], (content_type, error)
