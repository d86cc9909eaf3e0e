#!lua flags=allow-oom
--[[ adopt_partitions: read a queue's stored partition count, storing one first when the
  queue has none and the caller writes (the first writer wins). Runs in the queue's home
  (partition 0). A queue with no stored count but with data in its home (from before
  counts were stored) stays as it is when stored as 1; stored as N > 1 it gets history
  '1' (lookups by id also look where one partition would have put a job), and it is
  refused while it holds live jobs there (their ids would no longer deduplicate).
  allow-oom: a worker must start on a full Redis.

  KEYS[1] meta             HASH  partitions, history
  KEYS[2..11] home lanes   STREAM (all ten, by lane number)
  KEYS[12] home delayed    ZSET
  KEYS[13] home stats      HASH
  KEYS[14] home dead       STREAM
  ARGV[1] partitions wanted (0 = adopt: 1 when none is stored)
  ARGV[2] 1 = store when none is stored; 0 = only read
  Returns: {stored count, history ('' or 'n,n,...' oldest first)}; {0, ''} when none is
    stored and none was stored now; {-1, live jobs} when refused
]]
local meta = KEYS[1]
local stored = redis.call('HGET', meta, 'partitions')
if stored then
  return {tonumber(stored), redis.call('HGET', meta, 'history') or ''}
end
if ARGV[2] ~= '1' then
  return {0, ''}
end
local n = tonumber(ARGV[1])
if n == 0 then n = 1 end
local history = ''
if n > 1 then
  local live = redis.call('ZCARD', KEYS[12])
  for i = 2, 11 do
    live = live + redis.call('XLEN', KEYS[i])
  end
  if live > 0 then
    return {-1, live}
  end
  if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9],
      KEYS[10], KEYS[11], KEYS[13], KEYS[14]) > 0 then
    history = '1'
  end
end
redis.call('HSET', meta, 'partitions', n)
if history ~= '' then
  redis.call('HSET', meta, 'history', history)
end
return {n, history}
