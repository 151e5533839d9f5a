"""Key names live only in producer/keys.py: no Lua source (a .lua file, or Lua inline in a Python module) spells
one or builds one by concatenation. Scripts get their keys in `KEYS` or from `keys.lua_prelude()`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import redis

from producer import keys
from producer.jobhash import JobField
from producer.scripts import lua_script

ROOT = Path(__file__).resolve().parents[2]
LUA_FILES = sorted((ROOT / "producer" / "lua").glob("*.lua"))
# A string literal joined with `..` that looks like part of a key name: `"apikey:" .. id`, `b .. ":done"`,
# `queue .. ".msgs"`. (Messages and timestamps join words with spaces, or a lone ".", and do not match.)
_KEY_PART = r'"(?=[\w.:-]*\w)(?=[\w.:-]*[:.])[\w.:-]+"'
_KEY_CONCAT = re.compile(rf"\.\.\s*{_KEY_PART}|{_KEY_PART}\s*\.\.")
_HASH_FIELD = re.compile(r'"(?:HGET|HSET|HDEL|HINCRBY|HINCRBYFLOAT|HEXISTS)",\s*job,\s*"(\w+)"')


def _inline_lua() -> list[tuple[str, str]]:
    """String constants in producer/ and gpu_worker/ modules that hold Lua (they call `redis.call`)."""
    found = []
    for path in sorted([*(ROOT / "producer").rglob("*.py"), *(ROOT / "gpu_worker").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "redis.call(" in node.value:
                found.append((str(path.relative_to(ROOT)), node.value))
    return found


SOURCES = [(str(p.relative_to(ROOT)), p.read_text()) for p in LUA_FILES] + _inline_lua()


def _code(lua: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in lua.splitlines())  # comments may name keys


@pytest.mark.parametrize(("where", "lua"), SOURCES, ids=[where for where, _ in SOURCES])
def test_no_lua_source_names_or_builds_a_key(where: str, lua: str) -> None:
    code = _code(lua)
    assert keys.PREFIX not in code, f"{where} spells a key prefix; take the key from KEYS or keys.lua_prelude()"
    assert not re.search(r"\bSDQ\b", code), f"{where} uses the old SDQ prefix variable"
    assert not _KEY_CONCAT.findall(code), f"{where} builds a key name: {_KEY_CONCAT.findall(code)}"


def test_the_scan_finds_every_script_and_would_catch_a_built_key() -> None:
    names = {Path(where).name for where, _ in SOURCES}
    assert {"claim.lua", "touch.lua", "settle.lua", "cancel.lua", "reap.lua", "create.lua", "batch.lua"} <= names
    assert {"usage.lua", "_moved.lua", "_create.lua", "submit.lua"} <= names
    assert any(where.endswith("ratelimit.py") for where, _ in SOURCES)  # inline Lua is scanned too
    for built in (
        'redis.call("ZADD", "sdq:" .. "jobs", 1, id)',
        'local b = prefix .. "batch:" .. id',
        'redis.call("RPUSH", b .. ":done", id)',
        'redis.call("HSET", queue .. ".msgs", id, body)',
    ):
        code = _code(built)
        assert keys.PREFIX in code or _KEY_CONCAT.search(code), built
    for fine in ('t[1] .. "." .. string.format("%06d", t[2])', '"the job ran " .. n .. " times (last worker: " .. w'):
        assert not _KEY_CONCAT.search(fine), fine


def test_every_job_field_a_script_names_belongs_to_the_record_module() -> None:
    named = {field for _, lua in SOURCES for field in _HASH_FIELD.findall(_code(lua))}
    assert named, "the pattern found no field: it no longer matches how the scripts are written"
    assert named <= {f.value for f in JobField}, named - {f.value for f in JobField}


def test_the_prelude_makes_the_same_names_as_keys_py(redis_client: redis.Redis) -> None:
    # The Lua functions, run by Redis, against the Python functions they come from.
    probe = (
        "return {K_job('j1'), K_index('queued'), K_tenant_jobs('acme'), K_tenant_index('acme', 'running'),"
        " K_api_key('k1'), K_key_queued('k1'), K_batch('b1'), K_batch_jobs('b1'), K_batch_done('b1'),"
        " K_tenant_batches('acme'), K_seq, K_jobs, K_events, K_progress_events, K_idempotency('jobs', 'acme', 'k')}"
    )
    got = [v.decode() for v in redis_client.eval(keys.lua_prelude() + probe, 0)]  # type: ignore[union-attr]
    assert got == [
        keys.job("j1"),
        keys.index("queued"),
        keys.tenant_index("acme", None),
        keys.tenant_index("acme", "running"),
        keys.api_key("k1"),
        keys.key_queued("k1"),
        keys.batch("b1"),
        keys.batch_jobs("b1"),
        keys.batch_done("b1"),
        keys.tenant_batches("acme"),
        keys.SEQUENCE,
        keys.INDEX_ALL,
        keys.EVENTS,
        keys.PROGRESS_EVENTS,
        keys.idempotency("acme", "jobs", "k"),
    ]
    assert lua_script("claim").startswith(keys.lua_prelude())


def test_the_progress_lane_is_capped_where_keys_py_says_and_state_changes_are_not_capped() -> None:
    moved = next(lua for name, lua in SOURCES if name.endswith("_moved.lua"))
    xadds = [line for line in _code(moved).splitlines() if '"XADD"' in line]
    capped = [line for line in xadds if "MAXLEN" in line]
    assert capped == [line for line in xadds if "K_progress_events" in line] and len(capped) == 1
    assert f'"MAXLEN", "~", {keys.PROGRESS_EVENTS_MAXLEN:d},' in capped[0]
    assert len(xadds) == 3  # progress, a job's state change, batch.completed
