#!lua
--[[ upsert_schedule: create or change one schedule, compare-and-set on its version.
  The caller read the schedule (or found none), computed its due slot from the spec on
  the Redis clock, and writes the result here only if nothing changed meanwhile: a
  concurrent upsert, pause, resume or firing changes the version token, and the caller
  reads again. The due slot must lie after the last fired slot (the tombstone), so a
  changed spec can never fire a slot already fired. The runs count and the tombstone
  are kept across changes; a new schedule starts them afresh.

  KEYS[1] schedule    HASH  v (version token), due (ms or '' = none), last (last fired
                            slot ms, the tombstone), lr (its run's job id), runs, missed,
                            paused (0/1), created, updated, and the spec fields ARGV[8..]
  KEYS[2] schedules   ZSET  schedule_id scored by due ms (+inf: paused, or no slot left)
  KEYS[3] events      STREAM (capped at ARGV[7]; 0 = no events): 'scheduled' entry
  KEYS[4] control     STREAM wakes idle workers when this due is the partition's earliest
  ARGV[1] schedule_id   ARGV[2] expected version token ('' = the schedule must not exist)
  ARGV[3] new version token   ARGV[4] due slot (ms; '' = none)   ARGV[5] paused (0/1)
  ARGV[6] reason for the event (created | changed | paused | resumed)
  ARGV[7] events max length
  ARGV[8..] field, value pairs of the spec, payload and options to store
  Returns: {1, due} written; {0, current version} the version changed: read again;
    {-1, last} the due slot is not after the last fired slot: compute again from it.
]]
local sched, zset, events, control = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sid, expected, token, due, paused = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local evmax = ARGV[7]
local cur = redis.call('HGET', sched, 'v') or ''
if cur ~= expected then
  return {0, cur}
end
local last = redis.call('HGET', sched, 'last') or ''
if due ~= '' and last ~= '' and tonumber(due) <= tonumber(last) then
  return {-1, last}
end
local now = now_ms()
if expected == '' then
  redis.call('DEL', sched)
  redis.call('HSET', sched, 'runs', 0, 'missed', 0, 'last', '', 'lr', '', 'created', now)
end
local fields = {'v', token, 'due', due, 'paused', paused, 'updated', now}
for i = 8, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', sched, unpack(fields))
local score = '+inf'
if due ~= '' and paused == '0' then
  score = due
  local first = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
  if not first[2] or tonumber(due) < tonumber(first[2]) then
    -- the runners of this partition may sleep until a later slot: wake them
    redis.call('XADD', control, 'MAXLEN', '~', 64, '*', 'sched', due)
  end
end
redis.call('ZADD', zset, score, sid)
if evmax ~= '0' then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'scheduled', 'j', '', 'y', '',
    'a', 0, 'sched', sid, 'next', due, 'why', ARGV[6])
end
return {1, due}
