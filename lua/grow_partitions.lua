#!lua
--[[ grow_partitions: raise a queue's stored partition count (operators). The caller has
  checked that no job is live in any partition; this compares and sets, so that two
  operators cannot both grow the queue from the same count. The old count joins the
  history: jobs finished (records, dead letters) before the change are still found by id.

  KEYS[1] meta   HASH  partitions, history
  ARGV[1] the stored count the caller checked   ARGV[2] the new count (> ARGV[1])
  Returns: {1, history} grown; {0, stored count (0 = none)} when the stored count is not ARGV[1]
]]
local meta = KEYS[1]
local stored = redis.call('HGET', meta, 'partitions')
if stored ~= ARGV[1] then
  return {0, tonumber(stored or '0')}
end
local history = redis.call('HGET', meta, 'history') or ''
if history == '' then
  history = stored
else
  history = history .. ',' .. stored
end
redis.call('HSET', meta, 'partitions', ARGV[2], 'history', history)
return {1, history}
