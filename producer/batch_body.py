"""Reading a `POST /v1/batches` body as it streams in: a JSON object, a JSON array of items, or JSON Lines.

Nothing is parsed whole. The body is pushed chunk by chunk into ijson (its yajl C backend where installed) and
each item is built as its events arrive, so the item cap stops a body at item 10 001, and no item, and nothing
outside the items, may hold more than `MAX_ITEM_VALUES` JSON values: memory stays a small multiple of the
largest batch that could pass validation, whatever the body. (`from_json` of a 40 MB array of `{}` built 13
million dicts, about 22 times the body, before the cap was looked at.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import ijson
from pydantic import ValidationError

from .field_errors import field_error
from .jobs import MAX_BATCH_ITEMS, BatchRequest

#: JSON values (scalars and containers) one item may hold, and so may all of the object's other members together.
#: The richest valid item (16 metadata entries, 4 LoRAs, 3 ControlNets, an IP-Adapter, a refiner, every field
#: set) holds about 130; past this the body is refused at once instead of built.
MAX_ITEM_VALUES = 1024
#: Field errors reported for one bad batch (the message still says how many items failed).
MAX_REPORTED_ERRORS = 50
#: Pushed into the parser at a time when the body is already in memory (a test, the CLI's dry run).
_CHUNK_BYTES = 64 * 1024
_STARTS = frozenset({"start_map", "start_array"})
_ENDS = frozenset({"end_map", "end_array"})

#: Returns the next chunk of the body, b"" once it has all been read.
ReadChunk = Callable[[], bytes]


class BatchValidationError(ValueError):
    """Some items (or the body) are invalid; `fields` name each problem as `items.<index>.<field>`."""

    def __init__(self, fields: list[dict[str, str]], *, bad_items: int = 0) -> None:
        shown = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:3])
        more = f" ({bad_items} items invalid)" if bad_items else ""
        super().__init__(f"invalid batch{more}: {shown}; nothing was enqueued")
        self.fields = fields


def parse_body(body: bytes, content_type: str) -> BatchRequest:
    """A `BatchRequest` from a whole body (see `parse_stream`); raises `BatchValidationError`."""
    chunks = iter([body[i : i + _CHUNK_BYTES] for i in range(0, len(body), _CHUNK_BYTES)])
    return parse_stream(lambda: next(chunks, b""), content_type)


def parse_stream(read: ReadChunk, content_type: str) -> BatchRequest:
    """A `BatchRequest` from a body read chunk by chunk: JSON Lines when `content_type` says so (an optional first
    line `{"defaults": …}`), else a JSON object or a JSON array of items. Raises `BatchValidationError` as soon as
    the body is known to be bad, without reading the rest; exceptions from `read` go through untouched."""
    lines = "ndjson" in content_type or "jsonl" in content_type
    raw = _json_lines(read) if lines else _json_document(read)
    try:
        return BatchRequest.model_validate(raw)
    except ValidationError as exc:
        raise BatchValidationError([field_error(e) for e in exc.errors()[:MAX_REPORTED_ERRORS]]) from None


def _fail(field: str, message: str) -> BatchValidationError:
    return BatchValidationError([{"field": field, "message": message}])


def _number_too_long(exc: ValueError | SystemError) -> BatchValidationError:
    """The refusal of a number Python will not convert (an integer of more than 4 300 digits: `int()`'s limit),
    which the parser raised; yajl's C backend raises that ValueError as a SystemError around it. Anything else
    is raised again."""
    if not isinstance(exc, ValueError) and not isinstance(exc.__context__, ValueError):
        raise exc
    return _fail("body", "holds a number with more digits than the server reads")


def _too_many(where: str) -> BatchValidationError:
    return _fail("items", f"at most {MAX_BATCH_ITEMS} items per batch (more at {where}); split it")


class _Value:
    """One JSON value built from ijson's basic events, refused past `MAX_ITEM_VALUES` values (named `field`)."""

    def __init__(self, field: str, budget: list[int]) -> None:
        self.field = field
        self.budget = budget  # shared by the members outside `items`: one count for all of them
        self.builder = ijson.ObjectBuilder()
        self.depth = 0

    def feed(self, event: str, value: Any) -> bool:
        """Takes one event; True once the value is complete."""
        if event in _STARTS:
            self.depth += 1
        elif event in _ENDS:
            self.depth -= 1
        if event != "map_key" and event not in _ENDS:
            self.budget[0] -= 1
            if self.budget[0] < 0:
                raise _fail(self.field, f"holds more than {MAX_ITEM_VALUES} JSON values")
            if type(value) is Decimal:  # yajl's non-integers; from_json gave floats, and so do we
                value = float(value)
        self.builder.event(event, value)
        return self.depth == 0

    @property
    def value(self) -> Any:
        """The value built (complete once `feed` returned True)."""
        return self.builder.value


def _events(read: ReadChunk) -> Iterator[tuple[str, Any]]:
    """ijson's basic events of the whole body, chunk by chunk; raises `BatchValidationError` for JSON errors."""
    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events)
    while True:
        chunk = read()  # outside the try: a 413 or a disconnect while reading is not a JSON error
        try:
            if chunk:
                parser.send(chunk)
            else:
                parser.close()
        except ijson.JSONError:
            raise _fail("body", "request body is not valid JSON") from None
        except (ValueError, SystemError) as exc:
            raise _number_too_long(exc) from None
        yield from events
        del events[:]
        if not chunk:
            return


def _json_document(read: ReadChunk) -> dict[str, Any]:
    events = _events(read)
    first, _ = next(events)
    if first not in _STARTS:
        raise _fail("body", "must be an object, an array or JSON Lines")
    if first == "start_array":
        items = _items(events, depth=1)
        _rest(events)
        return {"items": items}
    raw: dict[str, Any] = {}
    budget = [MAX_ITEM_VALUES]
    for event, key in events:
        if event == "end_map":
            break
        event, value = next(events)
        if key == "items" and event == "start_array":
            raw["items"] = _items(events, depth=2)
            continue
        member = _Value(key, budget)
        while not member.feed(event, value):
            event, value = next(events)
        raw[key] = member.value  # a key given twice: the last one counts, as json.loads has it
    _rest(events)
    return raw


def _items(events: Iterator[tuple[str, Any]], *, depth: int) -> list[Any]:
    """The items of the array just opened, each built as it arrives; stops at item MAX_BATCH_ITEMS + 1."""
    items: list[Any] = []
    for event, value in events:
        if event == "end_array":
            return items
        if len(items) >= MAX_BATCH_ITEMS:
            raise _too_many(f"item {len(items) + 1}")
        item = _Value(f"items.{len(items)}", [MAX_ITEM_VALUES])
        while not item.feed(event, value):
            event, value = next(events)
        items.append(item.value)
    raise _fail("body", "request body is not valid JSON")  # pragma: no cover - the parser raises first


def _rest(events: Iterable[tuple[str, Any]]) -> None:
    for _ in events:  # the parser checks what follows the document (only whitespace may)
        pass


def _json_lines(read: ReadChunk) -> dict[str, Any]:
    items: list[Any] = []
    defaults: Any = {}
    for number, line in enumerate(_lines(read), start=1):
        if not line.strip():
            continue
        if len(items) >= MAX_BATCH_ITEMS:
            raise _too_many(f"line {number}")
        value = _line_value(line, number, len(items))
        if not items and isinstance(value, dict) and set(value) == {"defaults"}:
            defaults = value["defaults"]
        else:
            items.append(value)
    return {"items": items, "defaults": defaults}


def _line_value(line: bytes, number: int, index: int) -> Any:
    value = _Value(f"items.{index}", [MAX_ITEM_VALUES])
    try:
        for event, data in ijson.basic_parse(line):
            value.feed(event, data)
    except ijson.JSONError:
        raise _fail("body", f"line {number} is not valid JSON") from None
    except BatchValidationError:  # the value's own refusal (a ValueError too)
        raise
    except (ValueError, SystemError) as exc:
        raise _number_too_long(exc) from None
    return value.value


def _lines(read: ReadChunk) -> Iterator[bytes]:
    """The body's lines (split at b"\\n" only, as `io.BytesIO` iterates), as the chunks holding them arrive."""
    pending: list[bytes] = []
    while chunk := read():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            yield b"".join([*pending, chunk[start : end + 1]])
            pending.clear()
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending)
