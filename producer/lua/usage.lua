-- usage(KEYS=[job, usage_day, all_jobs_day, tenant_jobs_day or ""],
--       ARGV=[seconds, ledger_field, ttl_s, gpu_s_field, usage_day_field, day, f1, v1, ...])
-- Adds a job's busy seconds to its record (`gpu_s_field`, and sets the usage fields f1, v1, ...) only while the
-- record exists (never creating a stub record), to the day's ledger under `ledger_field`, and to the day's job
-- totals (every job's, and its tenant's when it has one) under the same field, counting the job there once a day.
-- Returns 1, or 0 when the record is gone. Field names come from producer/jobhash.py.
local job, day = KEYS[1], KEYS[2]
if redis.call("EXISTS", job) == 0 then return 0 end
local first_today = redis.call("HGET", job, ARGV[5]) ~= ARGV[6]
redis.call("HINCRBYFLOAT", job, ARGV[4], ARGV[1])
redis.call("HSET", job, unpack(ARGV, 7))
redis.call("HINCRBYFLOAT", day, ARGV[2], ARGV[1])
redis.call("EXPIRE", day, ARGV[3])
for i = 3, 4 do
  local totals = KEYS[i]
  if totals ~= "" then
    redis.call("HINCRBYFLOAT", totals, ARGV[2], ARGV[1])
    if first_today then redis.call("HINCRBY", totals, "jobs", 1) end
    redis.call("EXPIRE", totals, ARGV[3])
  end
end
return 1
