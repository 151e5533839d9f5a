-- claim(KEYS=[job], ARGV=[worker, lease_s, max_attempts, ttl_s])
-- A worker takes a job. Returns {outcome, detail}:
--   {"claimed", attempt}  run it; `attempt` is the fencing token for every later write
--   {"busy", seconds}     another live attempt holds the lease; try again after `seconds`
--   {"skip", status}      nothing to run (terminal, canceled, or the record is gone)
local job = KEYS[1]
local worker, lease_s, max_attempts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl_s = tonumber(ARGV[4])
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- A worker took this job's message: if the job was canceled in line, that message is no longer on a queue.
redis.call("SREM", K_stale_messages, string.sub(job, #K_job("") + 1))
local status = redis.call("HGET", job, "status")
if not status then return {"skip", "missing"} end
if status == "succeeded" or status == "failed" or status == "canceled" then return {"skip", status} end

local seq = redis.call("HGET", job, "seq")
local function move(to)
  redis.call("HSET", job, "status", to)
  sdq_moved(job, redis.call("HGET", job, "id"), seq, status, to, ttl_s)
end
local function finish(to, err)
  move(to)
  redis.call("HSET", job, "finished_at", tostring(now))
  redis.call("HDEL", job, "lease_until")
  if err then redis.call("HSET", job, "error", err) end
  redis.call("EXPIRE", job, ttl_s)
end

if redis.call("HGET", job, "cancel") == "1" then
  finish("canceled", nil)
  return {"skip", "canceled"}
end
if status == "running" then
  local lease = tonumber(redis.call("HGET", job, "lease_until") or "0")
  if lease > now then return {"busy", tostring(lease - now)} end
end
local attempts = tonumber(redis.call("HGET", job, "attempts") or "0")
-- An orderly hand-off (a spot notice, with a checkpoint) is not a crash: it does not use up the job's attempts.
local handoffs = tonumber(redis.call("HGET", job, "handoffs") or "0")
if attempts - handoffs >= max_attempts then
  local last = redis.call("HGET", job, "worker") or "unknown"
  finish("failed", cjson.encode({code = "worker_lost", message = "the job ran " .. attempts ..
    " times without finishing (its worker died or lost the job each time; last worker: " .. last .. ")"}))
  return {"skip", "failed"}
end
attempts = redis.call("HINCRBY", job, "attempts", 1)
move("running")
redis.call("HSET", job, "worker", worker, "started_at", tostring(now), "lease_until", tostring(now + lease_s))
redis.call("HDEL", job, "progress")
return {"claimed", tostring(attempts)}
