-- reap(KEYS=[job], ARGV=[attempt, grace_s, max_attempts, ttl_s, note])
-- The janitor ends an attempt whose lease ran out: the job goes back to `queued` (a later claim starts a new
-- attempt) or, once it has run `max_attempts` times, fails with `worker_lost`.
-- Fenced: it acts only if `attempt` still holds the job and its lease expired more than `grace_s` ago, checked in
-- the same atomic step as the change, so a worker that settles or renews at the same moment wins cleanly.
-- A cancel requested while the attempt ran wins: the job ends `canceled` rather than going back to the queue (a
-- requeued job with a cancel flag would wait for a claim that refuses it, forever if its message is also lost).
-- Returns {outcome, detail}: {"requeued", attempts} | {"failed", attempts} | {"canceled", attempts}
--   | {"held", seconds_left} | {"lost", status}
local job = KEYS[1]
local attempt, grace_s, max_attempts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl_s, note = tonumber(ARGV[4]), ARGV[5]
local status = redis.call("HGET", job, "status")
if status ~= "running" or redis.call("HGET", job, "attempts") ~= attempt then
  return {"lost", status or "missing"}
end
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(redis.call("HGET", job, "lease_until") or "0")
if lease + grace_s > now then return {"held", tostring(lease + grace_s - now)} end

local id, seq = redis.call("HGET", job, "id"), redis.call("HGET", job, "seq")
local last = redis.call("HGET", job, "worker") or "unknown"
local to = "queued"
-- Spot hand-offs (checkpointed, orderly) do not use up attempts; see claim.lua.
local handoffs = tonumber(redis.call("HGET", job, "handoffs") or "0")
if tonumber(attempt) - handoffs >= max_attempts then to = "failed" end
if redis.call("HGET", job, "cancel") == "1" then to = "canceled" end
sdq_moved(job, id, seq, status, to, ttl_s)
redis.call("HSET", job, "status", to)
redis.call("HDEL", job, "lease_until")
local warnings = cjson.decode(redis.call("HGET", job, "warnings") or "[]")
table.insert(warnings, note)
redis.call("HSET", job, "warnings", cjson.encode(warnings))
if to == "canceled" then
  redis.call("HSET", job, "finished_at", tostring(now))
  redis.call("EXPIRE", job, ttl_s)
  return {"canceled", attempt}
end
if to == "failed" then
  redis.call("HSET", job, "finished_at", tostring(now), "error", cjson.encode({code = "worker_lost",
    message = "the job ran " .. attempt .. " times without finishing (its worker died or lost the job each time;"
      .. " last worker: " .. last .. ")"}))
  redis.call("EXPIRE", job, ttl_s)
  return {"failed", attempt}
end
redis.call("HSET", job, "worker", "")
return {"requeued", attempt}
