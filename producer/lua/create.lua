-- create(KEYS=[job, idempotency_or_empty, queue_or_empty, queue_msgs],
--        ARGV=[id, tenant, key_id, body_hash, max_queued, idem_ttl_s, message_id, message, wake_channel,
--              f1, v1, ...])
-- One new job (lua/_create.lua, which says what it writes and answers), its owner given by the caller.
-- The key functions (K_...) are prepended by store.py.
return sdq_create(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
                  tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9], 10, false)
