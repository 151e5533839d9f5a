-- usage(KEYS=[job, usage_day], ARGV=[seconds, ledger_field, ttl_s, gpu_s_field, f1, v1, ...])
-- Adds a job's busy seconds to its record (`gpu_s_field`, and sets the usage fields f1, v1, ...) only while the
-- record exists (never creating a stub record), and to the day's ledger under `ledger_field`. Returns 1, or 0
-- when the record is gone. Field names come from producer/jobhash.py.
local job, day = KEYS[1], KEYS[2]
if redis.call("EXISTS", job) == 0 then return 0 end
redis.call("HINCRBYFLOAT", job, ARGV[4], ARGV[1])
redis.call("HSET", job, unpack(ARGV, 5))
redis.call("HINCRBYFLOAT", day, ARGV[2], ARGV[1])
redis.call("EXPIRE", day, ARGV[3])
return 1
