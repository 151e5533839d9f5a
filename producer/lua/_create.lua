-- sdq_create(job, idem, queue, queue_msgs, id, tenant, key_id, body_hash, max_queued, idem_ttl_s, message_id,
--            message, wake_channel, first, owned): what lua/create.lua and lua/submit.lua share.
-- Records a new queued job with all its indexes and, given a queue, its Dramatiq message (written as Dramatiq's
-- own enqueue writes it, then rings the queue's doorbell), in one atomic step: there is never a record without a
-- message or the reverse. Its hash fields are ARGV[first], ARGV[first + 1], ...; `owned`: write `tenant` and
-- `key_id` into it too (the caller learnt them in this step, from the API key). Unless
--   the Idempotency-Key already produced a job:  {"existing", id} (same body) or {"mismatch", id} (another body)
--   the API key's queued jobs reached its quota: {"quota", queued}
-- Otherwise {"created", seq, its place in line}.
local function sdq_create(job, idem, queue, queue_msgs, id, tenant, key_id, body_hash, max_queued, idem_ttl_s,
                          message_id, message, wake_channel, first, owned)
  if idem ~= "" then
    local prior = redis.call("GET", idem)
    if prior then
      local prior_id, prior_hash = string.match(prior, "^(%S+) (%S+)$")
      -- A key whose job has expired is free again.
      if prior_id and redis.call("EXISTS", K_job(prior_id)) == 1 then
        if prior_hash ~= body_hash then return {"mismatch", prior_id} end
        return {"existing", prior_id}
      end
    end
  end
  local queued_count = K_key_queued(key_id)
  if key_id ~= "" and max_queued > 0 then
    local queued = tonumber(redis.call("GET", queued_count) or "0")
    if queued >= max_queued then return {"quota", tostring(queued)} end
  end
  local seq = redis.call("INCR", K_seq)
  -- One HSET of every field (each redis.call costs a few microseconds); its batch_id read from the same fields.
  local fields, batch_id = {"seq", seq}, nil
  if owned then
    fields[3], fields[4], fields[5], fields[6] = "tenant", tenant, "key_id", key_id
  end
  for i = first, #ARGV, 2 do
    fields[#fields + 1], fields[#fields + 2] = ARGV[i], ARGV[i + 1]
    if ARGV[i] == "batch_id" then batch_id = ARGV[i + 1] end
  end
  redis.call("HSET", job, unpack(fields))
  redis.call("ZADD", K_jobs, seq, id)
  -- In line (producer/line.py): a job of a batch behind every interactive one.
  redis.call("ZADD", K_index("queued"), sdq_line_score(batch_id, seq), id)
  if tenant ~= "" then
    redis.call("ZADD", K_tenant_jobs(tenant), seq, id)
    redis.call("ZADD", K_tenant_index(tenant, "queued"), seq, id)
  end
  if key_id ~= "" then redis.call("INCR", queued_count) end
  if idem ~= "" then redis.call("SET", idem, id .. " " .. body_hash, "EX", idem_ttl_s) end
  if queue ~= "" then
    redis.call("HSET", queue_msgs, message_id, message)
    redis.call("RPUSH", queue, message_id)
    redis.call("PUBLISH", wake_channel, "1")  -- idle workers fetch now, not at their next poll (doorbell.py)
  end
  return {"created", tostring(seq), tostring(redis.call("ZRANK", K_index("queued"), id))}
end
