#!lua flags=allow-oom
--[[ defer: put a job back for later WITHOUT using an attempt ("not now"), fenced by
  ownership. Moves the entry from its lane to the delayed set, due after delay ms on the
  Redis clock, with its failure count, stalls (take-overs in place included), last error
  and b (backoff and the job's own timeout) unchanged; the claim script
  promotes it back to the same lane when due. For handlers that find a dependency
  unavailable before doing any work (e.g. every SMS provider's circuit breaker is open).
  allow-oom: it moves, not grows, data.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events         STREAM (capped at ARGV[8]; 0 = no events): one 'deferred' entry
  KEYS[13] delayed        ZSET
  KEYS[14] delayed data   HASH
  KEYS[15] control        STREAM
  KEYS[16] moves          HASH
  KEYS[17] index bucket of the job   HASH
  ARGV[1] group  ARGV[2] consumer  ARGV[3] lane  ARGV[4] entry_id  ARGV[5] job_id
  ARGV[6] delay (ms)  ARGV[7] reason (one line, already redacted; events only)
  ARGV[8] events max length
  Returns: due time (ms, Redis clock) on success; 0 if the claim was lost; -1 if the entry is gone.
]]
local events, delayed, ddata, control = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local moves, bucket = KEYS[16], KEYS[17]
local group, consumer = ARGV[1], ARGV[2]
local lane_no = tonumber(ARGV[3])
local lane, id, job_id = KEYS[1 + lane_no], ARGV[4], ARGV[5]
local evmax = tonumber(ARGV[8])
local p = redis.call('XPENDING', lane, group, id, id, 1)
if not (p[1] and p[1][2] == consumer) then
  return 0
end
local r = redis.call('XRANGE', lane, id, id)
redis.call('XACK', lane, group, id)
if not r[1] then
  return -1
end
local f = fields_of(r[1][2])
local now = now_ms()
local due = now + tonumber(ARGV[6])
local created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
-- stalls so far: earlier runs' plus this entry's take-overs in place (deliveries after the first)
local stalls = (tonumber(f['s']) or 0) + math.max(0, tonumber(p[1][4]) - 1)
redis.call('XDEL', lane, id)
redis.call('HSET', ddata, job_id, cmsgpack.pack({job_id, f['d'] or '', f['a'] or '1',
  tonumber(f['n']) or 0, stalls, created, f['b'] or '', lane_no, f['e'] or '', f['y'] or ''}))
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
redis.call('ZADD', delayed, due, job_id)
redis.call('HSET', bucket, job_id, 'd')
redis.call('HDEL', moves, job_id)
if not first[2] or due < tonumber(first[2]) then
  redis.call('XADD', control, 'MAXLEN', '~', 64, '*', 'due', due)
end
if evmax > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'deferred', 'j', job_id,
    'y', f['y'] or '', 'a', (tonumber(f['n']) or 0) + 1, 'delay', ARGV[6], 'e', ARGV[7])
end
return due
