#!lua
--[[ enqueue: add N jobs to a queue, each either to its priority lane or to the delayed set.
  A job whose id is already live (in the index) is not added again: a retried or
  duplicate add returns the existing job. Due times use the Redis clock.
  Not allow-oom: under maxmemory the add is refused (the caller raises QueueFull).

  KEYS[1] index         HASH   job_id -> location
  KEYS[2] lane high     STREAM
  KEYS[3] lane normal   STREAM
  KEYS[4] lane low      STREAM
  KEYS[5] delayed       ZSET   job_id scored by due ms
  KEYS[6] delayed data  HASH   job_id -> cmsgpack entry
  KEYS[7] control       STREAM wakes idle workers (capped)
  ARGV[1] number of jobs N
  then per job, 6 values:
    job_id, payload (bytes), lane (0 high | 1 normal | 2 low), attempts (max),
    delay (ms, 0 = now), backoff spec (string, opaque here)
  Returns: array of N integers, 1 = added, 0 = already live (deduplicated).
]]
local index, delayed, ddata, control = KEYS[1], KEYS[5], KEYS[6], KEYS[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local out = {}
local earliest = nil
for i = 0, n - 1 do
  local base = 2 + i * 6
  local job_id, payload, lane = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local attempts, delay, backoff = ARGV[base + 3], tonumber(ARGV[base + 4]), ARGV[base + 5]
  if redis.call('HEXISTS', index, job_id) == 1 then
    out[#out + 1] = 0
  elseif delay > 0 then
    local due = now + delay
    if earliest == nil then
      local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
      earliest = first[2] and tonumber(first[2]) or math.huge
    end
    redis.call('ZADD', delayed, due, job_id)
    redis.call('HSET', ddata, job_id,
      cmsgpack.pack({job_id, payload, attempts, 0, 0, now, backoff, lane, ''}))
    redis.call('HSET', index, job_id, 'd')
    if due < earliest then
      -- an idle worker may be sleeping until a later due time: wake it
      earliest = due
      redis.call('XADD', control, 'MAXLEN', '~', 64, '*', 'due', due)
    end
    out[#out + 1] = 1
  else
    local id = redis.call('XADD', KEYS[2 + lane], '*', 'j', job_id, 'd', payload,
      'a', attempts, 'n', 0, 's', 0, 't', now, 'b', backoff)
    redis.call('HSET', index, job_id, lane .. ':' .. id)
    out[#out + 1] = 1
  end
end
return out
