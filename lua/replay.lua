#!lua
--[[ replay: put a dead-lettered job back to work with a fresh set of attempts.
  Skipped when the same job id is live again (its index bucket has it). Not
  allow-oom: it adds work.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events   STREAM (capped at ARGV[2]; 0 = no events)
  KEYS[13] dead     STREAM
  KEYS[14] stats    HASH  failed counter
  KEYS[15] moves    HASH
  KEYS[16] index bucket of the job held by the dead entry   HASH
  KEYS[17] job record   STRING (dropped: the job is live again)
  ARGV[1] dead entry id  ARGV[2] events max length
  Returns: 1 replayed; 0 no such dead entry; -1 the job id is live already.
]]
local events, dead, stats, moves, bucket, rec = KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17]
local r = redis.call('XRANGE', dead, ARGV[1], ARGV[1])
if not r[1] then
  return 0
end
local raw = r[1][2]
local f = {}
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
if redis.call('HEXISTS', bucket, f['j']) == 1 then
  return -1
end
local now = now_ms()
local lane_no = tonumber(f['l'])
local id = redis.call('XADD', KEYS[1 + lane_no], '*', 'j', f['j'], 'd', f['d'],
  'm', (f['a'] or '1') .. '|0|0|' .. math.max(0, now - (tonumber(f['t']) or now)) .. '|' ..
  (f['b'] or '') .. '|' .. (f['y'] or ''))
redis.call('HSET', bucket, f['j'], lane_no .. ':' .. id)
mark_lane(KEYS[11], lane_no)
redis.call('HDEL', moves, f['j'])
redis.call('XDEL', dead, ARGV[1])
redis.call('DEL', rec)
redis.call('HINCRBY', stats, 'failed', -1)
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', tonumber(ARGV[2]), '*', 'ev', 'replayed',
    'j', f['j'], 'y', f['y'] or '', 'a', 1)
end
return 1
