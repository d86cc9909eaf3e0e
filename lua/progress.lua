#!lua
--[[ progress: record the progress a running job reported, fenced by ownership.
  Written only while this consumer still owns the job's entry (a worker whose entry was
  taken over gets 0 and raises LeaseLost); the value is tagged with the attempt, so a
  later attempt never shows an earlier one's progress. One 'progress' event per write
  (the worker throttles writes per job). Not allow-oom: it adds data.

  KEYS[1] the job's lane   STREAM (consumer group ARGV[1])
  KEYS[2] progress of the job   STRING '<attempt>|<value as JSON>' (TTL ARGV[7])
  KEYS[3] events   STREAM (capped at ARGV[8]; 0 = no events): ev 'progress', p = value
  ARGV[1] group  ARGV[2] consumer  ARGV[3] entry_id  ARGV[4] job_id  ARGV[5] attempt
  ARGV[6] value (JSON)  ARGV[7] ttl (ms)  ARGV[8] events max length  ARGV[9] type
  Returns: 1 written; 0 the claim was lost (nothing written).
]]
local lane, key, events = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[3]
local p = redis.call('XPENDING', lane, ARGV[1], id, id, 1)
if not (p[1] and p[1][2] == ARGV[2]) then
  return 0
end
redis.call('SET', key, ARGV[5] .. '|' .. ARGV[6], 'PX', ARGV[7])
if ARGV[8] ~= '0' then
  redis.call('XADD', events, 'MAXLEN', '~', ARGV[8], '*', 'ev', 'progress', 'j', ARGV[4],
    'y', ARGV[9], 'a', ARGV[5], 'p', ARGV[6])
end
return 1
