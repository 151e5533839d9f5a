-- cancel(KEYS=[job], ARGV=[ttl_s])
-- A queued job is canceled at once (it will never run); a running one is flagged and stops at its next step.
-- Returns the status after the call, or "missing".
local job = KEYS[1]
local ttl_s = tonumber(ARGV[1])
local status = redis.call("HGET", job, "status")
if not status then return "missing" end
if status == "succeeded" or status == "failed" or status == "canceled" then return status end
redis.call("HSET", job, "cancel", "1")
if status == "queued" then
  local id, seq = redis.call("HGET", job, "id"), redis.call("HGET", job, "seq")
  local t = redis.call("TIME")
  sdq_moved(job, id, seq, status, "canceled", ttl_s)
  -- Its message stays on the queue until a worker takes it (and drops it): the janitor must not count it.
  redis.call("SADD", K_stale_messages, id)
  redis.call("EXPIRE", K_stale_messages, ttl_s)
  redis.call("HSET", job, "status", "canceled", "finished_at", tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000))
  redis.call("EXPIRE", job, ttl_s)
  return "canceled"
end
return status
