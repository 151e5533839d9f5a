-- touch(KEYS=[job], ARGV=[attempt, lease_s, progress_json_or_empty])
-- The running attempt renews its lease (and reports progress). Returns {outcome, cancel_requested}:
--   {"ok", "0"|"1"}  still ours; "1" when a cancel was requested
--   {"lost", status} the attempt was fenced off (another attempt took over, or the job ended)
local job = KEYS[1]
local attempt, lease_s, progress = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local status = redis.call("HGET", job, "status")
if status ~= "running" or redis.call("HGET", job, "attempts") ~= attempt then
  return {"lost", status or "missing"}
end
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call("HSET", job, "lease_until", tostring(now + lease_s))
if progress ~= "" then
  redis.call("HSET", job, "progress", progress)
  sdq_event(job, redis.call("HGET", job, "id"), "progress", progress)
end
return {"ok", redis.call("HGET", job, "cancel") or "0"}
