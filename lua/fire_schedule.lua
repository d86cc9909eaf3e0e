#!lua
--[[ fire_schedule: claim a schedule's due slot, enqueue its run, advance to the next slot.
  One transition, compare-and-set on the schedule's version and due slot: of the workers
  racing for a slot, one fires it; the others find the due slot moved and do nothing.
  The caller computed (from the spec, in Python) which slot to fire and the next due
  slot; this script checks on the Redis clock that the slot is due, that it lies after
  the last fired slot (the tombstone, kept with the schedule, outlives the run's job
  record), and, with overlap 'skip', that the previous run is no longer live. The run's
  job id is derived from (schedule id, slot) by the caller; a live id is not added
  twice. A limit reached ends the schedule (no due slot).

  KEYS[1] schedule    HASH (see upsert_schedule)
  KEYS[2] schedules   ZSET schedule_id scored by due ms (+inf: none)
  KEYS[3] events      STREAM (capped at ARGV[12]; 0 = no events): 'added' and 'fired' for
                      the run, 'missed' for slots not run (sched, n, why)
  KEYS[4] index bucket of the run            HASH job_id -> location
  KEYS[5] index bucket of the previous run   HASH (any bucket when there is none)
  KEYS[6] the run's lane                     STREAM (the lane of its priority)
  KEYS[7] lane map                           STRING (lua/shared.lua: mark_lane)
  ARGV[1] schedule_id   ARGV[2] version token read   ARGV[3] due slot read (ms)
  ARGV[4] slot to fire (ms; '' = none: every due slot is missed)   ARGV[5] run job id
  ARGV[6] next due slot (ms; '' = none)   ARGV[7] slots missed (not run)
  ARGV[8] payload   ARGV[9] lane number   ARGV[10] attempts   ARGV[11] backoff spec
  ARGV[12] events max length   ARGV[13] type (may be '')   ARGV[14] why missed (downtime)
  ARGV[15] the plan holds until (ms; '' = no bound): from then on a later slot is due too
           (or the slot is past the misfire grace), and the caller must plan again
  Returns: {1, fired (0/1), now ms, runs}  done
           {0}  stale: the version or due slot changed (another worker fired it)
           {-1} no such schedule   {-2} paused   {-3, ms until due}  not due yet
           {-4, last}  the slot is not after the last fired slot (refused)
           {-5, now}   the plan no longer holds (plan again with this now)
]]
local sched, zset, events = KEYS[1], KEYS[2], KEYS[3]
local bucket, prev_bucket, lane = KEYS[4], KEYS[5], KEYS[6]
local sid, version, due_read, slot, run_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local nxt, missed, evmax = ARGV[6], tonumber(ARGV[7]), ARGV[12]
local h = redis.call('HMGET', sched, 'v', 'due', 'last', 'runs', 'paused', 'lim', 'ov', 'lr')
if not h[1] then
  return {-1}
end
if h[1] ~= version or h[2] ~= due_read then
  return {0}
end
if h[5] == '1' then
  return {-2}
end
local now = now_ms()
if due_read == '' or tonumber(due_read) > now then
  return {-3, due_read == '' and -1 or tonumber(due_read) - now}
end
if ARGV[15] ~= '' and now >= tonumber(ARGV[15]) then
  return {-5, now}
end
local last = h[3] or ''
if slot ~= '' then
  local s = tonumber(slot)
  if s > now or s < tonumber(due_read) or (last ~= '' and s <= tonumber(last)) then
    return {-4, last}
  end
end
local runs = tonumber(h[4]) or 0
local fired = 0
local why = ARGV[14]
if slot ~= '' and h[7] == 'skip' and h[8] and h[8] ~= '' and redis.call('HGET', prev_bucket, h[8]) then
  -- overlap 'skip': the previous run is still waiting, active or delayed
  missed = missed + 1
  why = 'overlap'
elseif slot ~= '' then
  if not redis.call('HGET', bucket, run_id) then
    local id = redis.call('XADD', lane, '*', 'j', run_id, 'd', ARGV[8],
      'm', ARGV[10] .. '|0|0|0|' .. ARGV[11] .. '|' .. ARGV[13])
    redis.call('HSET', bucket, run_id, ARGV[9] .. ':' .. id)
    mark_lane(KEYS[7], tonumber(ARGV[9]))
  end
  runs = runs + 1
  fired = 1
  redis.call('HSET', sched, 'last', slot, 'lr', run_id, 'fired', now, 'runs', runs)
  if evmax ~= '0' then
    redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'added', 'j', run_id,
      'y', ARGV[13], 'a', 1)
    redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'fired', 'j', run_id,
      'y', ARGV[13], 'a', 1, 'sched', sid, 'slot', slot, 'late', now - tonumber(slot))
  end
end
if missed > 0 then
  redis.call('HINCRBY', sched, 'missed', missed)
  if evmax ~= '0' then
    redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'missed', 'j', '', 'y', '',
      'a', 0, 'sched', sid, 'slot', due_read, 'n', missed, 'why', why)
  end
end
local lim = tonumber(h[6]) or 0
if lim > 0 and runs >= lim then
  nxt = ''
end
redis.call('HSET', sched, 'due', nxt)
redis.call('ZADD', zset, nxt == '' and '+inf' or nxt, sid)
return {1, fired, now, runs}
