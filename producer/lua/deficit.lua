-- deficit(KEYS=[msgs hash, ...]): the counts the janitor's lost-message check compares, in one atomic snapshot:
-- {queued jobs, running jobs, jobs canceled in line whose message may still be queued, message bodies held}.
-- Every queued or running job has a message body until its worker acks it, so with nothing lost
-- queued + running <= messages - stale. O(1): counts only.
local messages = 0
for _, msgs in ipairs(KEYS) do messages = messages + redis.call("HLEN", msgs) end
local stale = redis.call("SCARD", K_stale_messages)
if messages == 0 and stale > 0 then  -- no message is left on any queue: none of them can be stale
  redis.call("DEL", K_stale_messages)
  stale = 0
end
return {redis.call("ZCARD", K_index("queued")), redis.call("ZCARD", K_index("running")), stale, messages}
