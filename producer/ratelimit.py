"""Per-key limits: a request rate (GCRA in Redis, shared by every API process) and a queued-jobs quota.

The rate limit is the Generic Cell Rate Algorithm: one Redis value per key (the theoretical arrival time of the
next request), updated in one Lua call, so every API replica sees the same budget and a burst of `burst`
requests is allowed on top of the sustained `rate_per_s`. The quota is enforced where jobs are created
(lua/create.lua counts the key's queued jobs in the same atomic step), so it cannot be raced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import AsyncScript

from . import keys
from .apikeys import ApiKey, key_from_fields, token_digest, token_key_id
from .errors import RateLimitedError

#: GCRA as a Lua function, shared by the plain limiter below and the key check that also counts the request
#: (apikeys.py), so both use one algorithm. Returns {allowed 0|1, retry_after_s}.
GCRA_LUA = """
local function sdq_gcra(state, interval, burst)
  local t = redis.call("TIME")
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local tat = tonumber(redis.call("GET", state) or "0")
  if tat < now then tat = now end
  local next_tat = tat + interval
  local excess = next_tat - now - burst * interval
  if excess > 0 then return {0, tostring(excess)} end
  redis.call("SET", state, tostring(next_tat), "PX", math.ceil((next_tat - now) * 1000) + 1)
  return {1, "0"}
end
"""
_GCRA = GCRA_LUA + "return sdq_gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"


# The key check of every request: read the key, check the presented token's digest, and only then count the
# request against the key's rate (so a wrong secret cannot spend a key's budget). A Lua function, shared by the key
# check alone (`_ADMIT`) and the one-call submission (lua/submit.lua, `producer.keyed_submit`).
ADMIT_LUA = """
-- sdq_admit(api_key, rate_state, token_digest, default_rate_per_s, default_burst): nil for an unknown, revoked or
-- mismatched key; else its fields (flat), the same as a table, allowed 0|1 and retry_after_s.
local function sdq_admit(api_key, rate_state, digest, default_rate, default_burst)
  local f = redis.call("HGETALL", api_key)
  if #f == 0 then return nil end
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  if h["revoked"] == "1" then return nil end
  if h["digest"] ~= digest then
    -- the token it replaced, while their overlap lasts (sdq keys rotate --token --overlap)
    local t = redis.call("TIME")
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    if h["prev_digest"] ~= digest or tonumber(h["prev_digest_until"] or "0") <= now then return nil end
  end
  local rate = tonumber(h["rate_per_s"] or default_rate)
  local burst = tonumber(h["burst"] or default_burst)
  if rate <= 0 then return f, h, 1, "0" end
  local verdict = sdq_gcra(rate_state, 1 / rate, math.max(burst, 1))
  return f, h, verdict[1], verdict[2]
end
"""
# admit(KEYS=[api_key, rate_state], ARGV=[token_digest, default_rate_per_s, default_burst])
# {} for an unknown, revoked or mismatched key; else {fields, allowed 0|1, retry_after_s}
_ADMIT = (
    GCRA_LUA
    + ADMIT_LUA
    + """
local f, _, allowed, retry_after = sdq_admit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if f == nil then return {} end
return {f, allowed, retry_after}
"""
)


def refused(limits: Limits, retry_after_s: float) -> RateLimitedError:
    """The error for a request over `limits`."""
    return RateLimitedError(
        f"rate limit of {limits.rate_per_s:g} requests/s (burst {limits.burst}) exceeded;"
        f" retry in {retry_after_s:.2f} s",
        retry_after_s=retry_after_s,
    )


@dataclass(frozen=True)
class Limits:
    """The limits one key runs under: its own, else the server's defaults. 0 disables a limit."""

    rate_per_s: float
    burst: int
    max_queued_jobs: int

    @classmethod
    def of(cls, key: ApiKey, defaults: Limits) -> Limits:
        """`key`'s limits, falling back to `defaults` for the ones it does not set."""
        return cls(
            rate_per_s=defaults.rate_per_s if key.rate_per_s is None else key.rate_per_s,
            burst=defaults.burst if key.burst is None else key.burst,
            max_queued_jobs=defaults.max_queued_jobs if key.max_queued_jobs is None else key.max_queued_jobs,
        )


class RateLimiter:
    """Admits or refuses one request of a key (`RateLimitedError` with the seconds to wait)."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_GCRA)
        self._admit = client.register_script(_ADMIT)
        self._async: dict[int, AsyncScript] = {}

    def check(self, key_id: str, limits: Limits) -> None:
        """Count one request; raises `RateLimitedError` when the key is over its rate."""
        if limits.rate_per_s <= 0:
            return
        allowed, retry_after = self._script(
            keys=[keys.rate(key_id)], args=[1.0 / limits.rate_per_s, max(limits.burst, 1)]
        )
        if not int(allowed):
            raise refused(limits, float(retry_after))

    def admit(self, token: str, defaults: Limits) -> tuple[ApiKey, Limits] | None:
        """The live key `token` belongs to and its limits, counting this request against its rate (one round
        trip); None for an unknown, malformed, revoked or wrong token. Raises `RateLimitedError`."""
        key_id = token_key_id(token)
        if key_id is None:
            return None
        found = self._admit(keys=_admit_keys(key_id), args=_admit_args(token, defaults))
        return admitted(found, defaults)

    async def admit_async(
        self, aclient: redis.asyncio.Redis, token: str, defaults: Limits
    ) -> tuple[ApiKey, Limits] | None:
        """`admit` over an asyncio client (the API's hot path)."""
        key_id = token_key_id(token)
        if key_id is None:
            return None
        script = self._async.get(id(aclient))
        if script is None:
            script = self._async[id(aclient)] = aclient.register_script(_ADMIT)
        return admitted(await script(keys=_admit_keys(key_id), args=_admit_args(token, defaults)), defaults)


def _admit_keys(key_id: str) -> list[str]:
    return [keys.api_key(key_id), keys.rate(key_id)]


def _admit_args(token: str, defaults: Limits) -> list[Any]:
    return [token_digest(token), defaults.rate_per_s, max(defaults.burst, 1)]


def admitted(found: Any, defaults: Limits) -> tuple[ApiKey, Limits] | None:
    """The key and limits of an `admit` answer ({fields, allowed, retry_after_s}; None for {}), or its
    `RateLimitedError` when the key is over its rate."""
    if not found:
        return None
    flat, allowed, retry_after = found
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    key = key_from_fields(fields)
    limits = Limits.of(key, defaults)
    if not int(allowed):
        raise refused(limits, float(retry_after))
    return key, limits


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
