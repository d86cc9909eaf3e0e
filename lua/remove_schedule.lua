#!lua flags=allow-oom
--[[ remove_schedule: delete a schedule; runs already enqueued are left to finish.
  allow-oom: removing frees memory.

  KEYS[1] schedule    HASH
  KEYS[2] schedules   ZSET
  KEYS[3] events      STREAM (capped at ARGV[2]; 0 = no events): 'unscheduled' entry
  ARGV[1] schedule_id   ARGV[2] events max length
  Returns: 1 removed, 0 there was no such schedule.
]]
local gone = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if gone == 1 and ARGV[2] ~= '0' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'ev', 'unscheduled', 'j', '',
    'y', '', 'a', 0, 'sched', ARGV[1])
end
return gone
