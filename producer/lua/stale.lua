-- stale(KEYS=[msgs hash, ...], ARGV=[cursor, count]): one SSCAN step over the jobs canceled in line, dropping
-- those no queue holds a message for any more (a worker took it without a claim, or it was lost).
-- Returns {next cursor, removed}. Its cost is `count` members.
local step = redis.call("SSCAN", K_stale_messages, ARGV[1], "COUNT", tonumber(ARGV[2]))
local removed = 0
for _, id in ipairs(step[2]) do
  local rmsg = redis.call("HGET", K_job(id), "rmsg")
  local found = false
  for _, msgs in ipairs(KEYS) do
    if redis.call("HEXISTS", msgs, id) == 1 or (rmsg and redis.call("HEXISTS", msgs, rmsg) == 1) then
      found = true
      break
    end
  end
  if not found then
    redis.call("SREM", K_stale_messages, id)
    removed = removed + 1
  end
end
return {step[1], removed}
