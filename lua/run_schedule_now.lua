#!lua
--[[ run_schedule_now: an extra run of a schedule, now, outside its slots (an operator's
  "run now"). Its job id is its own (not a slot's), so it never takes a slot's place:
  the due slot, the last fired slot, runs and limit are untouched. Compare-and-set on
  the version read, so the payload and options are the schedule's current ones.

  KEYS[1] schedule    HASH (see upsert_schedule)
  KEYS[2] events      STREAM (capped at ARGV[9]; 0 = no events): 'added' and 'fired'
  KEYS[3] index bucket of the run   HASH
  KEYS[4] the run's lane            STREAM
  KEYS[5] lane map                  STRING (lua/shared.lua: mark_lane)
  ARGV[1] schedule_id   ARGV[2] version token read   ARGV[3] run job id   ARGV[4] payload
  ARGV[5] lane number   ARGV[6] attempts   ARGV[7] backoff spec   ARGV[8] type (may be '')
  ARGV[9] events max length
  Returns: 1 added; 0 the version changed (read again); -1 no such schedule.
]]
local sched, events, bucket, lane = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, evmax = ARGV[3], ARGV[9]
local v = redis.call('HGET', sched, 'v')
if not v then
  return -1
end
if v ~= ARGV[2] then
  return 0
end
if not redis.call('HGET', bucket, run_id) then
  local id = redis.call('XADD', lane, '*', 'j', run_id, 'd', ARGV[4],
    'm', ARGV[6] .. '|0|0|0|' .. ARGV[7] .. '|' .. ARGV[8])
  redis.call('HSET', bucket, run_id, ARGV[5] .. ':' .. id)
  mark_lane(KEYS[5], tonumber(ARGV[5]))
end
if evmax ~= '0' then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'added', 'j', run_id,
    'y', ARGV[8], 'a', 1)
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'fired', 'j', run_id,
    'y', ARGV[8], 'a', 1, 'sched', ARGV[1], 'slot', 'now')
end
return 1
