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
  ARGV[4] N, then per job one string 'lane|entry_id|attempt|created ms|max attempts|job_id'
    (packed: one argument per job keeps the client's encoding work small)
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
  local lane_no, id, attempt, created, max_attempts, job_id =
    string.match(ARGV[4 + i], '^(%d)|([^|]+)|(%d+)|(%d+)|(%d+)|(.+)$')
  local lane = KEYS[1 + tonumber(lane_no)]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XACK', lane, group, id)
    redis.call('XDEL', lane, id)
    redis.call('HDEL', index, job_id)
    if ttl > 0 then
      local rec = KEYS[5 + i]
      redis.call('DEL', rec)
      redis.call('HSET', rec, 'st', 'completed', 'n', attempt, 't', created,
        'a', max_attempts, 'f', now)
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
