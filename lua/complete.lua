#!lua flags=allow-oom
--[[ complete: record the success of a batch of jobs, fenced by ownership.
  Only entries this consumer still owns in the group's PEL are completed (a reclaimed
  entry belongs to someone else: their outcome stands): XACK + XDEL, dropped from the
  index, counted, and, when ttl > 0, a completed record written. Ownership is read
  once per lane in use (the consumer's own PEL), and acks and deletes go one call per lane:
  Redis time per job is what bounds a worker's drain rate. allow-oom: frees memory.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events   STREAM (capped at ARGV[5]; 0 = no events): one 'completed' entry per
                   100 jobs, j/y/a holding space-separated job ids, types, attempts
  KEYS[13] stats    HASH  completed counter
  KEYS[14] moves    HASH
  KEYS[15] completed index   ZSET job_id scored by finish ms, capped at ARGV[7] (the newest
                   kept: trimmed once per call, so a call adds N and removes the overflow)
  KEYS[14 + 2i] index bucket of the i-th job   HASH
  KEYS[15 + 2i] record of the i-th job         STRING 'completed|attempt|max|created|finished|type|'
                   then '|' (no result), 'r|<result bytes>' or 'x|<why the result was dropped>'
  ARGV[1] group   ARGV[2] consumer   ARGV[3] record ttl (ms; 0 = keep no record)
  ARGV[4] N   ARGV[5] events max length   ARGV[6] bound on this consumer's pending entries
  ARGV[7] completed index max length (0 = no index)
  then per job one string 'lane|entry_id|attempt|created ms|max attempts|type|job_id'
    (packed: one argument per job keeps the client's encoding work small)
  then the results, LAST in ARGV (their count is the very last argument, 0 when no job of
  the call returned one, so a None result costs nothing): R pairs (1-based position of
  the job, record tail 'r|<bytes>' or 'x|<reason>'), then R
  Returns: array of the 1-based positions of the jobs whose claim was lost (not recorded).
]]
local events, stats, moves, done = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local group, consumer, ttl, ttl_s = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[3]
local n, evmax, bound = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local done_max = tonumber(ARGV[7])
local now = now_ms()
local tails = {}
local n_results = tonumber(ARGV[#ARGV])
for r = 1, n_results do
  local at = #ARGV - 2 * (n_results - r + 1)
  tails[tonumber(ARGV[at])] = ARGV[at + 1]
end
local jobs = {}
local by_lane = {}
for lane_i = 1, LANES do by_lane[lane_i] = {} end
for i = 1, n do
  local lane_no, id, attempt, created, max_attempts, jtype, job_id =
    string.match(ARGV[7 + i], '^(%d)|([^|]+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.+)$')
  local lane_i = tonumber(lane_no) + 1
  jobs[i] = {lane_i, id, attempt, created, max_attempts, jtype, job_id}
  by_lane[lane_i][#by_lane[lane_i] + 1] = i
end
local owned = {}
for lane_i = 1, LANES do
  if #by_lane[lane_i] > 0 then
    local mine = {}
    for _, p in ipairs(redis.call('XPENDING', KEYS[lane_i], group, '-', '+', bound, consumer)) do
      mine[p[1]] = true
    end
    local ids = {}
    for _, i in ipairs(by_lane[lane_i]) do
      if mine[jobs[i][2]] then
        owned[i] = true
        ids[#ids + 1] = jobs[i][2]
      end
    end
    if #ids > 0 then
      redis.call('XACK', KEYS[lane_i], group, unpack(ids))
      -- newest first: deleting a stream's first entry makes Redis scan for the next
      -- live one, and deleting oldest-first would pay that scan for every id
      local desc = {}
      for k = #ids, 1, -1 do desc[#desc + 1] = ids[k] end
      redis.call('XDEL', KEYS[lane_i], unpack(desc))
    end
  end
end
local lost = {}
local done_ids, ev_types, ev_att = {}, {}, {}
local now_s = tostring(now)
for i = 1, n do
  local j = jobs[i]
  if owned[i] then
    done_ids[#done_ids + 1] = j[7]
    redis.call('HDEL', KEYS[14 + 2 * i], j[7])
    if ttl > 0 then
      redis.call('SET', KEYS[15 + 2 * i],
        'completed|' .. j[3] .. '|' .. j[5] .. '|' .. j[4] .. '|' .. now_s .. '|' .. j[6] .. '|' ..
          (tails[i] or '|'),
        'PX', ttl_s)
    end
    ev_types[#ev_types + 1] = j[6]
    ev_att[#ev_att + 1] = j[3]
  else
    lost[#lost + 1] = i
  end
end
if #done_ids > 0 then
  if evmax ~= '0' then
    emit_batch(events, evmax, 'completed', done_ids, ev_types, ev_att)
  end
  redis.call('HDEL', moves, unpack(done_ids))
  redis.call('HINCRBY', stats, 'completed', #done_ids)
  if done_max > 0 then
    local pairs_ = {}
    for k = 1, #done_ids do
      pairs_[#pairs_ + 1] = now
      pairs_[#pairs_ + 1] = done_ids[k]
    end
    redis.call('ZADD', done, unpack(pairs_))
    -- ranks 0 .. -(max+1) are the oldest beyond the cap; O(log n) when there are none
    redis.call('ZREMRANGEBYRANK', done, 0, -(done_max + 1))
  end
end
return lost
