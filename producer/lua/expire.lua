-- expire(KEYS=[], ARGV=[now, limit]): take the finished jobs (and batches) whose records have expired out of every
-- index that still names them, at most `limit` per call, oldest first; returns {unindexed, looked_at}.
-- Each member of K_expiring was written when its job finished (lua/_moved.lua) with the time its TTL ends. A record
-- that is still there (its TTL was extended) gets its new time instead; one without a TTL is live again (nothing
-- to do until it finishes again, which writes a new member). The cost is that of what expired: O(changes).
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call("ZRANGEBYSCORE", K_expiring, "-inf", now, "LIMIT", 0, limit)
local unindexed = 0
for _, member in ipairs(due) do
  local kind, id, rest = string.match(member, "^(%S+) (%S+) ?(.*)$")
  local key = kind == "job" and K_job(id) or K_batch(id)
  local ttl_ms = redis.call("PTTL", key)
  if ttl_ms > 0 then
    redis.call("ZADD", K_expiring, now + ttl_ms / 1000 + 1, member)
  else
    redis.call("ZREM", K_expiring, member)
    if ttl_ms == -2 and kind == "job" then
      local status, tenant = string.match(rest, "^(%S+) ?(%S*)$")
      redis.call("ZREM", K_jobs, id)
      redis.call("ZREM", K_index(status), id)
      if tenant ~= "" then
        redis.call("ZREM", K_tenant_jobs(tenant), id)
        redis.call("ZREM", K_tenant_index(tenant, status), id)
      end
      unindexed = unindexed + 1
    elseif ttl_ms == -2 then
      if rest ~= "" then redis.call("ZREM", K_tenant_batches(rest), id) end
      unindexed = unindexed + 1
    end
  end
end
return {unindexed, #due}
