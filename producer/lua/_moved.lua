-- sdq_moved: the side indexes every status change keeps in step. Prepended to each script that moves a job,
-- after the key functions `keys.lua_prelude()` generates from producer/keys.py (K_index, K_tenant_index, ...):
--   the global per-status index, the tenant's per-status index, the API key's queued set (what its quota
--   counts), the batch's per-status counters and its feed of finished jobs.
-- sdq_event: a job with a webhook ("hooks" = "1", or "2" to include progress; or an API key with a default
-- endpoint) appends its transition to the events stream in the same atomic step as the change, so a terminal
-- event exists exactly once per job (producer/webhooks/dispatch.py reads it). A GPU worker never waits on a
-- webhook: this XADD is all it does. State changes go to K_events, which is never capped (the dispatcher trims
-- what its group acknowledged); progress to K_progress_events, capped: best effort, and it cannot push a state
-- change out (keys.PROGRESS_EVENTS_MAXLEN is the cap below).
local function sdq_event(job, id, to, extra)
  local f = redis.call("HMGET", job, "hooks", "key_id")
  local hooks = f[1]
  if not hooks and f[2] and redis.call("HEXISTS", K_api_key(f[2]), "webhook_url") == 1 then
    hooks = "1"  -- the API key's default endpoint: state changes only
  end
  if not hooks or (to == "progress" and hooks ~= "2") then return end
  local t = redis.call("TIME")
  local fields = {"job_id", id, "to", to, "attempt", redis.call("HGET", job, "attempts") or "0",
    "at", t[1] .. "." .. string.format("%06d", t[2]), "extra", extra or ""}
  if to == "progress" then
    redis.call("XADD", K_progress_events, "MAXLEN", "~", 100000, "*", unpack(fields))
  else
    redis.call("XADD", K_events, "*", unpack(fields))
  end
end

-- The batch's last job just ended (the done list reached its total: that happens once). A batch with a webhook
-- of its own, or whose API key has a default endpoint, gets one batch.completed event.
local function sdq_batch_completed(b, batch)
  local f = redis.call("HMGET", b, "webhook_url", "key_id")
  local hooked = f[1] and f[1] ~= ""
  if not hooked and f[2] and f[2] ~= "" then
    hooked = redis.call("HEXISTS", K_api_key(f[2]), "webhook_url") == 1
  end
  if not hooked then return end
  local t = redis.call("TIME")
  redis.call("XADD", K_events, "*", "batch_id", batch, "to", "batch.completed",
    "at", t[1] .. "." .. string.format("%06d", t[2]))
end

local function sdq_moved(job, id, seq, from, to, ttl_s)
  local f = redis.call("HMGET", job, "tenant", "key_id", "batch_id")
  local tenant, key_id, batch = f[1], f[2], f[3]
  -- The global index of queued jobs is the line (producer/line.py): leaving `queued` leaves it in this step, and a
  -- job handed back to `queued` goes to the back of its lane (where its re-sent message goes), with a fresh number.
  redis.call("ZREM", K_index(from), id)
  if to == "queued" then
    redis.call("ZADD", K_index(to), sdq_line_score(batch, redis.call("INCR", K_seq)), id)
  else
    redis.call("ZADD", K_index(to), seq, id)
  end
  if to ~= "queued" then sdq_event(job, id, to, nil) end
  local finished = to == "succeeded" or to == "failed" or to == "canceled"
  local expires_at = nil
  if finished then  -- the record expires ttl_s from now: the sweep (lua/expire.lua) unindexes it then
    local t = redis.call("TIME")
    expires_at = tonumber(t[1]) + ttl_s + 1
    redis.call("ZADD", K_expiring, expires_at, "job " .. id .. " " .. to .. " " .. (tenant or ""))
  end
  if tenant then
    redis.call("ZREM", K_tenant_index(tenant, from), id)
    redis.call("ZADD", K_tenant_index(tenant, to), seq, id)
  end
  if key_id and (to == "queued") ~= (from == "queued") then  -- the API key's queued count (its quota)
    local count = K_key_queued(key_id)
    if to == "queued" then
      redis.call("INCR", count)
    elseif redis.call("DECR", count) < 0 then
      redis.call("SET", count, 0)  -- never below zero (e.g. jobs queued before the count existed)
    end
  end
  if batch then
    local b = K_batch(batch)
    redis.call("HINCRBY", b, from, -1)
    redis.call("HINCRBY", b, to, 1)
    if to == "succeeded" or to == "failed" or to == "canceled" then
      local done = redis.call("RPUSH", K_batch_done(batch), id)
      if done == tonumber(redis.call("HGET", b, "total") or "-1") then sdq_batch_completed(b, batch) end
      -- A batch outlives its last job by the record TTL.
      for _, k in ipairs({b, K_batch_jobs(batch), K_batch_done(batch)}) do redis.call("EXPIRE", k, ttl_s) end
      if tenant then redis.call("ZADD", K_expiring, expires_at, "batch " .. batch .. " " .. tenant) end
    end
  end
end
