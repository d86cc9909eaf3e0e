#!lua flags=allow-oom
--[[ flow_complete: record the success of one job of a flow, fenced by ownership, and in
  the same step tell its parent: the child's outcome is recorded once (r:<child id>,
  HSETNX: a retried or replayed child never counts twice), the parent's pending count
  goes down, and on the last child the parent goes to its lane. A job with children
  (it ran after them) marks its flow done and lets its children's outcomes expire with
  its record. What lua/complete.lua does for a job happens here too. allow-oom: it
  frees the lane entry.

  KEYS[1] completed index   ZSET (capped at ARGV[6])
  KEYS[2 ..] the job's key group (lua/flow_shared.lua), 10 + L keys
  then, when ARGV[10] is 1, the parent's key group, 10 + L keys
  ARGV[1] L (lanes per partition)   ARGV[2] group   ARGV[3] consumer
  ARGV[4] record ttl (ms)   ARGV[5] events max length   ARGV[6] completed index max length
  ARGV[7] 'lane|entry_id|attempt|created ms|max attempts|type|job_id'
  ARGV[8] record tail: '|' (no result), 'r|<bytes>' or 'x|<reason>' (lua/complete.lua)
  ARGV[9] 1 if the job has children   ARGV[10] 1 if the parent's key group follows
  ARGV[11] the parent's job id
  Returns: 1 completed; 0 the claim was lost (nothing recorded).
]]
local done = KEYS[1]
local L = tonumber(ARGV[1])
local group, consumer, ttl, evmax = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local done_max = tonumber(ARGV[6])
local lane_no, id, attempt, created, max_attempts, jtype, job_id =
  string.match(ARGV[7], '^(%d+)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.+)$')
local tail = ARGV[8]
local g = flow_group(1, L)
local lane = g.lanes[tonumber(lane_no) + 1]
local p = redis.call('XPENDING', lane, group, id, id, 1)
if not (p[1] and p[1][2] == consumer) then
  return 0
end
local now = now_ms()
redis.call('XACK', lane, group, id)
redis.call('XDEL', lane, id)
redis.call('HDEL', g.bucket, job_id)
redis.call('HDEL', g.moves, job_id)
if tonumber(ttl) > 0 then
  redis.call('SET', g.rec, 'completed|' .. attempt .. '|' .. max_attempts .. '|' .. created ..
    '|' .. now .. '|' .. jtype .. '|' .. tail, 'PX', ttl)
end
redis.call('HINCRBY', g.stats, 'completed', 1)
if done_max > 0 then
  redis.call('ZADD', done, now, job_id)
  redis.call('ZREMRANGEBYRANK', done, 0, -(done_max + 1))
end
flow_event(g.events, evmax, 'completed', job_id, jtype, attempt)
if ARGV[9] == '1' and redis.call('EXISTS', g.flow) == 1 then
  redis.call('HSET', g.flow, 'st', 'd')
  redis.call('PEXPIRE', g.flow, math.max(1, tonumber(ttl)))
end
if ARGV[10] == '1' then
  local pg = flow_group(1 + FLOW_GROUP + L, L)
  local outcome = tail
  if tail == '|' then
    outcome = 'n|'
  end
  flow_child_done(pg, ARGV[11], job_id, outcome, now)
end
return 1
