#!lua flags=allow-oom
--[[ complete: record the success of a batch of jobs, fenced by ownership.
  For each entry: only if this consumer still owns it in the group's PEL (a reclaimed
  entry belongs to someone else: their outcome stands), XACK + XDEL it, drop it from
  the index, bump the counter and, when ttl > 0, write the completed record.
  allow-oom: completing frees memory.

  KEYS[1..3] lanes high, normal, low   STREAM
  KEYS[4] index   HASH
  KEYS[5] stats   HASH  completed counter
  KEYS[5 + i] job record of the i-th job   HASH
  ARGV[1] group   ARGV[2] consumer   ARGV[3] record ttl (ms; 0 = keep no record)
  ARGV[4] N, then per job 6 values: lane, entry_id, job_id, attempt (1-based), created (ms),
    max attempts
  Returns: array of the 1-based positions of the jobs whose claim was lost (not recorded).
]]
local index, stats = KEYS[4], KEYS[5]
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = {}
local done = 0
for i = 1, n do
  local base = 5 + (i - 1) * 6
  local lane = KEYS[1 + tonumber(ARGV[base])]
  local id, job_id = ARGV[base + 1], ARGV[base + 2]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XACK', lane, group, id)
    redis.call('XDEL', lane, id)
    redis.call('HDEL', index, job_id)
    if ttl > 0 then
      local rec = KEYS[5 + i]
      redis.call('DEL', rec)
      redis.call('HSET', rec, 'st', 'completed', 'n', ARGV[base + 3], 't', ARGV[base + 4],
        'a', ARGV[base + 5], 'f', now)
      redis.call('PEXPIRE', rec, ttl)
    end
    done = done + 1
  else
    lost[#lost + 1] = i
  end
end
if done > 0 then
  redis.call('HINCRBY', stats, 'completed', done)
end
return lost
