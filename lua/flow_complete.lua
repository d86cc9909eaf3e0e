#!lua flags=allow-oom
--[[ flow_complete: record the success of a batch of jobs of flows (one partition),
  fenced by ownership, and in the same step tell each one's parent: the child's outcome
  is recorded once (r:<child id>, HSETNX: a retried or replayed child never counts
  twice), the parent's pending count goes down, and on its last child the parent goes
  to its lane. A job with children (it ran after them) marks its flow done and lets its
  children's outcomes expire with its record. For each job, what lua/complete.lua does
  happens here too. allow-oom: it frees lane entries.

  KEYS[1] completed index   ZSET (capped at ARGV[6])
  KEYS[2] events   STREAM (capped at ARGV[5]; 0 = no events): 'completed' entries of up to
                   100 jobs (j/y/a), 'children_done' for each parent released
  KEYS[3] stats    HASH  completed counter
  KEYS[4] moves    HASH
  KEYS[5 .. 4 + L] lanes, by lane number   STREAM
  then per job: index bucket HASH, record STRING (lua/complete.lua's), flow hash HASH;
    and when the job has a parent, the parent's key group (lua/flow_shared.lua, 11 + L)
  ARGV[1] L (lanes per partition)   ARGV[2] group   ARGV[3] consumer
  ARGV[4] record ttl (ms; 0 = keep no record)   ARGV[5] events max length
  ARGV[6] completed index max length   ARGV[7] N (jobs)
  then per job 5 values: 'lane|entry_id|attempt|created ms|max attempts|type|job_id',
    record tail ('|' no result, 'r|<bytes>' or 'x|<reason>': lua/complete.lua),
    1 if the job has children, 1 if it has a parent (its key group follows its own
    keys), the parent's job id ('' without one)
  Returns: array of the 1-based positions of the jobs whose claim was lost (not recorded).
]]
local done, events, stats, moves = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local L = tonumber(ARGV[1])
local group, consumer, ttl, evmax = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local done_max, n = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local lost = {}
local ids, types, att = {}, {}, {}
local k = 4 + L
for i = 1, n do
  local b = 7 + (i - 1) * 5
  local lane_no, id, attempt, created, max_attempts, jtype, job_id =
    string.match(ARGV[b + 1], '^(%d+)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.+)$')
  local tail, has_kids, has_parent = ARGV[b + 2], ARGV[b + 3] == '1', ARGV[b + 4] == '1'
  local bucket, rec, flow = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local pg = nil
  if has_parent then
    pg = flow_group(k + 3, L)
    k = k + 3 + FLOW_GROUP + L
  else
    k = k + 3
  end
  local lane = KEYS[5 + tonumber(lane_no)]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if not (p[1] and p[1][2] == consumer) then
    lost[#lost + 1] = i
  else
    redis.call('XACK', lane, group, id)
    redis.call('XDEL', lane, id)
    redis.call('HDEL', bucket, job_id)
    redis.call('HDEL', moves, job_id)
    if ttl > 0 then
      redis.call('SET', rec, 'completed|' .. attempt .. '|' .. max_attempts .. '|' .. created ..
        '|' .. now .. '|' .. jtype .. '|' .. tail, 'PX', ttl)
    end
    if done_max > 0 then
      redis.call('ZADD', done, now, job_id)
    end
    ids[#ids + 1] = job_id
    types[#types + 1] = jtype
    att[#att + 1] = attempt
    if has_kids and redis.call('EXISTS', flow) == 1 then
      redis.call('HSET', flow, 'st', 'd')
      redis.call('PEXPIRE', flow, math.max(1, ttl))
    end
    if pg then
      local outcome = tail
      if tail == '|' then
        outcome = 'n|'
      end
      flow_child_done(pg, ARGV[b + 5], job_id, outcome, now)
    end
  end
end
if #ids > 0 then
  redis.call('HINCRBY', stats, 'completed', #ids)
  emit_batch(events, evmax, 'completed', ids, types, att)
  if done_max > 0 then
    redis.call('ZREMRANGEBYRANK', done, 0, -(done_max + 1))
  end
end
return lost
