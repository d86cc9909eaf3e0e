#!lua
--[[ route_pin: pin a job to downstream ARGV[1] just before calling it (state
  'sending'), unless the pin changed since the caller read it, or the job is pinned
  elsewhere in a state that forbids moving: a message that may have been delivered
  ('sending' or 'maybe') never moves to a second downstream. Moving is allowed only
  from 'unsent' (every call so far provably did not deliver). ARGV[4] names the
  downstream the job fails over from ('' when it is not a failover): then a 'failover'
  event is written.

  KEYS[1] route    HASH p, s (see route_begin); TTL
  KEYS[2] events   STREAM (capped at ARGV[9]; 0 = no events)
  ARGV[1] downstream to pin   ARGV[2] pinned downstream as read by the caller ('' none)
  ARGV[3] TTL (ms)   ARGV[4] failover from ('' none)   ARGV[5] failover reason
  ARGV[6] job id   ARGV[7] job type   ARGV[8] attempt   ARGV[9] events max length
  Returns: {1, downstream, state now ('sending', or 'maybe' if it was)} when pinned,
    else {0, current downstream, state}
]]
local route, events = KEYS[1], KEYS[2]
local target, seen = ARGV[1], ARGV[2]
local evmax = tonumber(ARGV[9])
local state = redis.call('HMGET', route, 'p', 's')
local p, s = state[1] or '', state[2] or ''
if p ~= seen then
  return {0, p, s}
end
if p ~= '' and p ~= target and s ~= 'unsent' then
  return {0, p, s}
end
-- pinned again to the same downstream: a 'maybe' stays 'maybe'
local now_s = (p == target and s == 'maybe') and 'maybe' or 'sending'
redis.call('HSET', route, 'p', target, 's', now_s)
redis.call('PEXPIRE', route, ARGV[3])
if ARGV[4] ~= '' and evmax > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'failover', 'j', ARGV[6],
    'y', ARGV[7], 'a', ARGV[8], 'from', ARGV[4], 'to', target, 'reason', ARGV[5])
end
return {1, target, now_s}
