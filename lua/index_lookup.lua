#!lua flags=allow-oom
--[[ index_lookup: the job ids of one blind-index term, pruning expired entries on the way.
  A term has one set per key id of the ring (see blind_index.py); each is a ZSET of job
  ids scored by the time (ms, Redis clock) after which the job can no longer exist.

  KEYS[1..N] the term's index sets   ZSET job_id scored by expiry (ms)
  allow-oom: it only deletes.
  Returns: array of distinct job ids whose entries have not expired, in no set order.
]]
local now = now_ms()
local out, seen = {}, {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  for _, job_id in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    if not seen[job_id] then
      seen[job_id] = true
      out[#out + 1] = job_id
    end
  end
end
return out
