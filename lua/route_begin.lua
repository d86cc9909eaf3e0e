#!lua
--[[ route_begin: read which downstream a job is pinned to, at the start of a run. A
  pin still marked 'sending' means the run that set it never settled (its worker died
  mid-call): that call may have been delivered, so the pin becomes 'maybe' and the job
  may never move to another downstream. Refreshes the pin's TTL.

  KEYS[1] route   HASH p (downstream name), s (sending|unsent|maybe); TTL
  ARGV[1] TTL (ms)
  Returns: {downstream name or '', state or ''}
]]
local route = KEYS[1]
local state = redis.call('HMGET', route, 'p', 's')
if not state[1] then
  return {'', ''}
end
local s = state[2] or 'maybe'
if s == 'sending' then
  s = 'maybe'
  redis.call('HSET', route, 's', s)
end
redis.call('PEXPIRE', route, ARGV[1])
return {state[1], s}
