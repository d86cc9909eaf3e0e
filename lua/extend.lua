#!lua flags=allow-oom
--[[ extend: heartbeat, keep this worker's running entries from looking stalled.
  Resets each entry's idle time (XCLAIM to self, JUSTID: the delivery count stays) but
  only after checking that this consumer still owns it: a bare XCLAIM would steal an
  entry another worker has already reclaimed.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  ARGV[1] group  ARGV[2] consumer  ARGV[3] N, then per entry: lane, entry_id
  Returns: array of the 1-based positions of the entries this consumer no longer owns.
]]
local group, consumer = ARGV[1], ARGV[2]
local lost = {}
for i = 1, tonumber(ARGV[3]) do
  local lane = KEYS[1 + tonumber(ARGV[2 + 2 * i])]
  local id = ARGV[3 + 2 * i]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    redis.call('XCLAIM', lane, group, consumer, 0, id, 'JUSTID')
  else
    lost[#lost + 1] = i
  end
end
return lost
