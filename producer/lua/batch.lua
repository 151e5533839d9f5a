-- batch(KEYS=[queue, queue_msgs], ARGV=[json]) records many jobs and enqueues their Dramatiq messages in one
-- atomic step: a `POST /v1/batches` submission, or (without `batch`) the jobs of one inbound webhook.
-- json = {id, batch, tenant, key_id, max_queued, created_at, wake, fields = {f1, v1, ...},
--         jobs = {{id, message, f1, v1, ...}, ...}, idem = {key, value, digest, ttl_s}?, seen = {key, ttl_s}?}
-- Per job: the record (with its sequence number), the global, tenant and API-key indexes, the Dramatiq message
-- (written as Dramatiq's own enqueue writes it). Per batch (`batch` true): its hash with per-status counters, its
-- job list, its place in the tenant's batch index, and its jobs in the batch lane of the line; without, the jobs
-- go in the interactive lane, as single jobs do.
-- `idem` is the batch's Idempotency-Key, checked and set in this same step (so a process that dies half-way
-- leaves no claim behind); `seen` an inbound webhook-id, accepted once (set here, so a refused delivery's retry
-- goes through).
-- Returns {"created", first_seq}, or with nothing written {"quota", queued}, {"existing", batch_id},
-- {"mismatch", batch_id} (the key came with another body) or {"replayed", job_ids}. The key functions (K_...)
-- are prepended by store.py.
local list, msgs = KEYS[1], KEYS[2]
local b = cjson.decode(ARGV[1])
local n = #b.jobs
if b.idem then
  local prior = redis.call("GET", b.idem.key)
  local prior_id, prior_hash = string.match(prior or "", "^(%S+) (%S+)$")
  if prior_id and redis.call("EXISTS", K_batch(prior_id)) == 1 then  -- a key whose batch expired is free again
    if prior_hash ~= b.idem.digest then return {"mismatch", prior_id} end
    return {"existing", prior_id}
  end
end
if b.seen then
  local earlier = redis.call("GET", b.seen.key)
  if earlier then return {"replayed", earlier} end
end
local key_queued = K_key_queued(b.key_id)
if b.key_id ~= "" and b.max_queued > 0 then
  local queued = tonumber(redis.call("GET", key_queued) or "0")
  if queued + n > b.max_queued then return {"quota", tostring(queued)} end
end
local first = redis.call("INCRBY", K_seq, n) - n + 1
local all, queued = K_jobs, K_index("queued")
local t_all, t_queued = K_tenant_jobs(b.tenant), K_tenant_index(b.tenant, "queued")
local batch_key, batch_jobs = K_batch(b.id), K_batch_jobs(b.id)
-- Members go out in chunks: one command per chunk, and never more arguments than Lua's unpack allows.
local chunk = 1000
local lane = b.batch and SDQ_BATCH_LANE or 0
local ids_all = {}  -- every job id, for `seen` (an inbound hook has at most 100)
local scored, lined, ids, bodies = {}, {}, {}, {}
local function flush()
  if #ids == 0 then return end
  redis.call("ZADD", all, unpack(scored))
  redis.call("ZADD", queued, unpack(lined))  -- the line (producer/line.py): the batch lane
  if b.tenant ~= "" then
    redis.call("ZADD", t_all, unpack(scored))
    redis.call("ZADD", t_queued, unpack(scored))
  end
  redis.call("HSET", msgs, unpack(bodies))
  redis.call("RPUSH", list, unpack(ids))
  if b.batch then redis.call("RPUSH", batch_jobs, unpack(ids)) end
  scored, lined, ids, bodies = {}, {}, {}, {}
end
for i, job in ipairs(b.jobs) do
  local id, seq = job[1], first + i - 1
  redis.call("HSET", K_job(id), "seq", seq, unpack(job, 3))
  scored[#scored + 1] = seq
  scored[#scored + 1] = id
  lined[#lined + 1] = lane + seq
  lined[#lined + 1] = id
  ids[#ids + 1] = id
  if b.seen then ids_all[#ids_all + 1] = id end
  bodies[#bodies + 1] = id
  bodies[#bodies + 1] = job[2]
  if #ids >= chunk then flush() end
end
flush()
if b.key_id ~= "" then redis.call("INCRBY", key_queued, n) end
redis.call("PUBLISH", b.wake, "1")  -- idle workers fetch now, not at their next poll (doorbell.py)
if b.batch then
  redis.call("HSET", batch_key, unpack(b.fields))
  if b.tenant ~= "" then redis.call("ZADD", K_tenant_batches(b.tenant), b.created_at, b.id) end
end
if b.idem then redis.call("SET", b.idem.key, b.idem.value, "EX", b.idem.ttl_s) end
if b.seen then redis.call("SET", b.seen.key, table.concat(ids_all, ","), "EX", b.seen.ttl_s) end
return {"created", tostring(first)}
