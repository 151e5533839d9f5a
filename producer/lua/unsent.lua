-- unsent(KEYS=[msgs hash, ...], ARGV=[job_id, ...]): which of the given jobs are queued and have no message in
-- any of the queues' message hashes (pending, fetched or delayed: Dramatiq keeps a body there until the ack).
-- A job's message has its job id as Redis id, or the one noted as `rmsg` on its record (lua/msgref.lua).
-- The cost is that of the ids given: the janitor hands it one slice of the line per sweep.
local missing = {}
for _, id in ipairs(ARGV) do
  local job = K_job(id)
  local f = redis.call("HMGET", job, "status", "rmsg")
  if f[1] == "queued" then
    local found = false
    for _, msgs in ipairs(KEYS) do
      if redis.call("HEXISTS", msgs, id) == 1 or (f[2] and redis.call("HEXISTS", msgs, f[2]) == 1) then
        found = true
        break
      end
    end
    if not found then missing[#missing + 1] = id end
  end
end
return missing
