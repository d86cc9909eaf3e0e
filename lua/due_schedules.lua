#!lua flags=no-writes
--[[ due_schedules: which schedules of a partition are due now, on the Redis clock, and
  when the next one is. Read-only: firing is fire_schedule's.

  KEYS[1] schedules   ZSET schedule_id scored by due ms (+inf: none)
  KEYS[2] control     STREAM: its last id, for the caller to wait on from there
  ARGV[1] most schedules to return
  Returns: {now ms, ms until the first schedule not yet due (-1: none), control's last id,
    that schedule's id and due slot ('' '' if none), then the due ones: id, due, id, due...}
]]
local now = now_ms()
local last_id = '0-0'
local info = redis.pcall('XINFO', 'STREAM', KEYS[2])
if not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last_id = info[i + 1] end
  end
end
local out = {now, -1, last_id, '', ''}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[1]))
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if later[2] and later[2] ~= 'inf' then
  out[2] = tonumber(later[2]) - now
  out[4] = later[1]
  out[5] = later[2]
end
return out
