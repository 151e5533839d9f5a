-- submit(KEYS=[api_key, rate_state, job, queue_or_empty, queue_msgs],
--        ARGV=[token_digest, default_rate_per_s, default_burst, default_max_queued, roles, idempotency_key,
--              <lua/create.lua's ARGV, its tenant, key_id and max_queued unused>])
-- `POST /v1/jobs` with an API key in one atomic step: the key check (ratelimit.py's sdq_admit: the key, its
-- revocation, its token, then its request rate), its role (`roles`: the names allowed, space-separated), then the
-- job (lua/_create.lua) owned by the key's tenant and counted against its quota (the key's `max_queued_jobs`, else
-- the default). Answers {} for an unknown, revoked or mismatched key, {"limited", key_fields, retry_after_s} over
-- its rate, {"forbidden", role}; else sdq_create's answers, "created" with the key's tenant:
-- {"created", seq, place_in_line, tenant}.
local f, h, allowed, retry_after = sdq_admit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if f == nil then return {} end
if tonumber(allowed) == 0 then return {"limited", f, retry_after} end
local role = h["role"]
if role == nil or role == "" then role = "tenant" end
if not string.find(" " .. ARGV[5] .. " ", " " .. role .. " ", 1, true) then return {"forbidden", role} end
local tenant, key_id = h["tenant"], h["id"]
local max_queued = tonumber(h["max_queued_jobs"] or "")
if max_queued == nil then max_queued = tonumber(ARGV[4]) end
local idem = ""
if ARGV[6] ~= "" then idem = K_idempotency("jobs", tenant, ARGV[6]) end
local c = 6  -- where create's ARGV begin
local answer = sdq_create(KEYS[3], idem, KEYS[4], KEYS[5], ARGV[c + 1], tenant, key_id, ARGV[c + 4], max_queued,
                          tonumber(ARGV[c + 6]), ARGV[c + 7], ARGV[c + 8], ARGV[c + 9], c + 10, true)
if answer[1] == "created" then answer[4] = tenant end
return answer
