#!lua flags=no-writes
--[[ get_payload: read the stored payload of one job, wherever it lives now.
  A waiting or active job's payload is in its lane entry, a delayed job's in the
  delayed data, a failed job's in its dead letter. Completed and cancelled jobs keep
  no payload (their records hold facts only).

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] moves          HASH
  KEYS[13] delayed data   HASH
  KEYS[14] index bucket of the job   HASH
  KEYS[15] job record     STRING 'state|attempts made|max|created|finished|type|dead id|error'
  KEYS[16] dead           STREAM
  ARGV[1] job_id
  Returns: {} when no payload is kept (unknown, expired, completed, cancelled, or a dead
    letter already purged); {'flow'} for a flow parent waiting for its children (its
    payload is in its flow hash); else {where, payload bytes} with where 'lane', 'delayed'
    or 'dead'.
]]
local moves, ddata, bucket, rec, dead = KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local job_id = ARGV[1]
local loc = redis.call('HGET', moves, job_id) or redis.call('HGET', bucket, job_id)
if not loc then
  local r = redis.call('GET', rec)
  if not r then return {} end
  local st, dead_id = string.match(r, '^(%a+)|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|')
  if st ~= 'failed' or not dead_id or dead_id == '' then return {} end
  local e = redis.call('XRANGE', dead, dead_id, dead_id)
  if not e[1] then return {} end
  local f = fields_of(e[1][2])
  if f['j'] ~= job_id or not f['d'] then return {} end
  return {'dead', f['d']}
end
if loc == 'c' then
  return {'flow'}  -- a flow parent waiting for its children keeps it in its flow hash
end
if loc == 'd' then
  local packed = redis.call('HGET', ddata, job_id)
  if not packed then return {} end
  return {'delayed', cmsgpack.unpack(packed)[2]}
end
local lane_no = tonumber(string.sub(loc, 1, 1))
local r = redis.call('XRANGE', KEYS[1 + lane_no], string.sub(loc, 3), string.sub(loc, 3))
if not r[1] then return {} end
local f = fields_of(r[1][2])
if not f['d'] then return {} end
return {'lane', f['d']}
