#!lua flags=allow-oom
--[[ complete: record the success of a batch of jobs, fenced by ownership.
  For each entry: only if this consumer still owns it in the group's PEL (a reclaimed
  entry belongs to someone else: their outcome stands), XACK + XDEL it, drop it from
  the index, bump the counter and, when ttl > 0, write the completed record.
  allow-oom: completing frees memory.

  KEYS[1..3] lanes high, normal, low   STREAM
  KEYS[4] events   STREAM (capped at ARGV[5]; 0 = no events)
  KEYS[5] stats    HASH  completed counter
  KEYS[6] moves    HASH
  KEYS[5 + 2i] index bucket of the i-th job   HASH
  KEYS[6 + 2i] record of the i-th job         HASH
  ARGV[1] group   ARGV[2] consumer   ARGV[3] record ttl (ms; 0 = keep no record)
  ARGV[4] N   ARGV[5] events max length
  then per job one string 'lane|entry_id|attempt|created ms|max attempts|type|job_id'
    (packed: one argument per job keeps the client's encoding work small)
  Returns: array of the 1-based positions of the jobs whose claim was lost (not recorded).
]]
local events, stats, moves = KEYS[4], KEYS[5], KEYS[6]
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n, evmax = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = {}
local done = 0
for i = 1, n do
  local lane_no, id, attempt, created, max_attempts, jtype, job_id =
    string.match(ARGV[5 + i], '^(%d)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.+)$')
  local lane = KEYS[1 + tonumber(lane_no)]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XACK', lane, group, id)
    redis.call('XDEL', lane, id)
    redis.call('HDEL', KEYS[5 + 2 * i], job_id)
    redis.call('HDEL', moves, job_id)
    if ttl > 0 then
      local rec = KEYS[6 + 2 * i]
      redis.call('DEL', rec)
      redis.call('HSET', rec, 'st', 'completed', 'n', attempt, 't', created,
        'a', max_attempts, 'f', now)
      redis.call('PEXPIRE', rec, ttl)
    end
    if evmax > 0 then
      redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'completed', 'j', job_id,
        'y', jtype, 'a', attempt)
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
