-- msgref(KEYS=[], ARGV=[job_id, redis_message_id]): note on a job's record the Redis id of the queue message that
-- now carries it, when that id is not the job id (a re-send, a retry, a delayed message made ready). Only on a
-- record that exists: a late note never brings an expired job back. See producer/msgref.py.
local job = K_job(ARGV[1])
if redis.call("EXISTS", job) == 1 then redis.call("HSET", job, "rmsg", ARGV[2]) end
return 1
