#!lua flags=no-writes
--[[ counts: jobs per state, read in one consistent snapshot.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] delayed   ZSET
  KEYS[13] stats     HASH  completed, failed, cancelled counters
  KEYS[14] paused    STRING
  KEYS[15] dead      STREAM
  ARGV[1] group
  Returns: {waiting, active, delayed, completed, failed, cancelled, paused (0/1), dead stream length}
]]
local waiting, active = 0, 0
for lane = 1, LANES do
  local len = redis.call('XLEN', KEYS[lane])
  local p = redis.pcall('XPENDING', KEYS[lane], ARGV[1])
  local pending = 0
  if not p.err then pending = tonumber(p[1]) end
  waiting = waiting + len - pending
  active = active + pending
end
local s = redis.call('HMGET', KEYS[13], 'completed', 'failed', 'cancelled')
return {waiting, active, redis.call('ZCARD', KEYS[12]), tonumber(s[1]) or 0, tonumber(s[2]) or 0,
  tonumber(s[3]) or 0, redis.call('EXISTS', KEYS[14]), redis.call('XLEN', KEYS[15])}
