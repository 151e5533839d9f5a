-- settle(KEYS=[job], ARGV=[attempt, to_status, ttl_s, field1, value1, ...])
-- The running attempt ends: a terminal status, or "queued" to hand the job back for a retry.
-- Fenced: only the attempt that holds the job may settle it. Returns "ok" or "lost".
local job = KEYS[1]
local attempt, to, ttl_s = ARGV[1], ARGV[2], tonumber(ARGV[3])
local status = redis.call("HGET", job, "status")
if status ~= "running" or redis.call("HGET", job, "attempts") ~= attempt then return "lost" end
local id, seq = redis.call("HGET", job, "id"), redis.call("HGET", job, "seq")
sdq_moved(job, id, seq, status, to, ttl_s)
redis.call("HSET", job, "status", to)
redis.call("HDEL", job, "lease_until")
for i = 4, #ARGV, 2 do redis.call("HSET", job, ARGV[i], ARGV[i + 1]) end
if to ~= "queued" then
  local t = redis.call("TIME")
  redis.call("HSET", job, "finished_at", tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000))
  redis.call("EXPIRE", job, ttl_s)
end
return "ok"
