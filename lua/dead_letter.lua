#!lua flags=allow-oom
--[[ dead_letter: fail a job for good, fenced by ownership.
  Copies the entry (payload and meta, with the error) to the capped dead-letter
  stream, XACK + XDEL it, drops it from the index, writes the failed record with its
  TTL and bumps the failed counter. allow-oom: it frees the lane entry.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events   STREAM (capped at ARGV[10]; 0 = no events)
  KEYS[13] dead     STREAM (capped, MAXLEN ~ ARGV[9])
  KEYS[14] stats    HASH
  KEYS[15] moves    HASH
  KEYS[16] index bucket of the job   HASH
  KEYS[17] job record   STRING 'failed|attempts made|max|created|finished|type|dead id|error'
  ARGV[1] group  ARGV[2] consumer  ARGV[3] lane  ARGV[4] entry_id  ARGV[5] job_id
  ARGV[6] error (one line, already redacted)  ARGV[7] record ttl (ms; 0 = keep no record)
  ARGV[8] attempts made (recorded)  ARGV[9] dead stream max length
  ARGV[10] events max length  ARGV[11] 1 if a handler attempt failed (emit 'failed' first)
  Returns: the dead-letter entry id; 0 if the claim was lost; -1 if the entry is gone;
    {-2, spec} for a job of a flow (its spec carries the flow link): nothing done.
]]
local events, dead, stats, moves, bucket, rec = KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17]
local group, consumer = ARGV[1], ARGV[2]
local lane_no = tonumber(ARGV[3])
local lane, id, job_id, err = KEYS[1 + lane_no], ARGV[4], ARGV[5], ARGV[6]
local evmax = tonumber(ARGV[10])
local p = redis.call('XPENDING', lane, group, id, id, 1)
if not (p[1] and p[1][2] == consumer) then
  return 0
end
local r = redis.call('XRANGE', lane, id, id)
local f = r[1] and fields_of(r[1][2]) or {}
if f['b'] and string.find(f['b'], '/', 1, true) then
  return {-2, f['b']}  -- a job of a flow: lua/flow_dead_letter.lua settles its flow too
end
redis.call('XACK', lane, group, id)
redis.call('HDEL', bucket, job_id)
redis.call('HDEL', moves, job_id)
if not r[1] then
  return -1
end
local now = now_ms()
-- a malformed entry may lack any field: dead-letter what there is
local attempts = f['a'] or '1'
local created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
local jtype = f['y'] or ''
redis.call('XDEL', lane, id)
local dead_id = redis.call('XADD', dead, 'MAXLEN', '~', tonumber(ARGV[9]), '*',
  'j', job_id, 'd', f['d'] or '', 'a', attempts, 'n', ARGV[8], 's', f['s'] or '0',
  't', created, 'b', f['b'] or '', 'y', jtype, 'l', lane_no, 'e', err, 'f', now)
if tonumber(ARGV[7]) > 0 then
  redis.call('SET', rec, 'failed|' .. ARGV[8] .. '|' .. attempts .. '|' .. created .. '|' .. now ..
    '|' .. jtype .. '|' .. dead_id .. '|' .. err, 'PX', ARGV[7])
end
redis.call('HINCRBY', stats, 'failed', 1)
if evmax > 0 then
  if ARGV[11] == '1' then
    redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'failed', 'j', job_id,
      'y', jtype, 'a', ARGV[8], 'e', err)
  end
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'dead', 'j', job_id,
    'y', jtype, 'a', ARGV[8], 'e', err)
end
return dead_id
