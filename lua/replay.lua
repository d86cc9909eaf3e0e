#!lua
--[[ replay: put a dead-lettered job back to work with a fresh set of attempts.
  Skipped when the same job id is live again (the index has it). Not allow-oom: it
  adds work.

  KEYS[1..3] lanes high, normal, low   STREAM
  KEYS[4] index   HASH
  KEYS[5] dead    STREAM
  KEYS[6] stats   HASH  failed counter
  KEYS[7] job record   HASH (of the job id held by the dead entry)
  ARGV[1] dead entry id
  Returns: 1 replayed; 0 no such dead entry; -1 the job id is live already.
]]
local index, dead, stats, rec = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local r = redis.call('XRANGE', dead, ARGV[1], ARGV[1])
if not r[1] then
  return 0
end
local raw = r[1][2]
local f = {}
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
if redis.call('HEXISTS', index, f['j']) == 1 then
  return -1
end
local lane_no = tonumber(f['l'])
local id = redis.call('XADD', KEYS[1 + lane_no], '*', 'j', f['j'], 'd', f['d'], 'a', f['a'],
  'n', 0, 's', 0, 't', f['t'], 'b', f['b'])
redis.call('HSET', index, f['j'], lane_no .. ':' .. id)
redis.call('XDEL', dead, ARGV[1])
redis.call('DEL', rec)
redis.call('HINCRBY', stats, 'failed', -1)
return 1
