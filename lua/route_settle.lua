#!lua
--[[ route_settle: record how a call through the pinned downstream ended. 'unsent'
  (provably not delivered: refused connection, DNS, credentials) lets the job move on,
  but only if no earlier call may have delivered it (the pin is still 'sending', not
  'maybe'); 'maybe' (an ambiguous outcome: a timeout after sending, 5xx, garbage) and
  'sent' keep it on this downstream for good. A pin that moved meanwhile is left alone.

  KEYS[1] route   HASH p, s (see route_begin); TTL
  ARGV[1] downstream called   ARGV[2] outcome: unsent | maybe | sent   ARGV[3] TTL (ms)
  Returns: the state after ('' if the pin is not on ARGV[1])
]]
local route = KEYS[1]
local state = redis.call('HMGET', route, 'p', 's')
if state[1] ~= ARGV[1] then
  return ''
end
local s = state[2] or 'maybe'
if ARGV[2] == 'unsent' then
  if s == 'sending' then
    s = 'unsent'
  end
else
  s = 'maybe'
end
redis.call('HSET', route, 's', s)
redis.call('PEXPIRE', route, ARGV[3])
return s
