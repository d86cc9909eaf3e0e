#!lua flags=no-writes
--[[ flow_link: read where one job stands in a flow (for the dashboard's tree), in one
  snapshot. A job with children has a flow hash naming its own parent ('up'); any other
  job of a flow carries its link in the spec of its entry (flows/link.py), which every
  transition copies: the lane entry while waiting or running, the delayed data while
  delayed, the dead letter once failed. A completed or cancelled job without children
  keeps no link (its record holds facts only): the caller then needs its parent named.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] moves          HASH
  KEYS[12] delayed data   HASH
  KEYS[13] index bucket of the job   HASH
  KEYS[14] job record     STRING 'state|attempts made|max|created|finished|type|dead id|error'
  KEYS[15] dead           STREAM
  KEYS[16] flow hash of the job   HASH
  ARGV[1] job_id
  Returns: {'parent', up} for a job with children (up: its own parent as
    'queue/partition/id', '' for a flow's root); {'spec', spec} for another job found in
    an entry (a spec without '/' is a job outside any flow); {'found'} for a job known
    here without a link (completed, cancelled); {} for a job unknown here.
]]
local moves, ddata, bucket, rec, dead, flow = KEYS[11], KEYS[12], KEYS[13], KEYS[14],
  KEYS[15], KEYS[16]
local job_id = ARGV[1]
local up = redis.call('HMGET', flow, 'st', 'up')
if up[1] then
  return {'parent', up[2] or ''}
end
local loc = redis.call('HGET', moves, job_id) or redis.call('HGET', bucket, job_id)
if not loc then
  local r = redis.call('GET', rec)
  if not r then return {} end
  local st, dead_id = string.match(r, '^(%a+)|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|')
  if st == 'failed' and dead_id and dead_id ~= '' then
    local e = redis.call('XRANGE', dead, dead_id, dead_id)
    if e[1] then
      local f = fields_of(e[1][2])
      if f['j'] == job_id and f['b'] then
        return {'spec', f['b']}
      end
    end
  end
  return {'found'}
end
if loc == 'd' then
  local packed = redis.call('HGET', ddata, job_id)
  if not packed then return {'found'} end
  return {'spec', cmsgpack.unpack(packed)[7] or ''}
end
if loc == 'c' then
  return {'found'}  -- a waiting parent without its flow hash: cannot be, but say so
end
local lane_no = tonumber(string.sub(loc, 1, 1))
local r = redis.call('XRANGE', KEYS[1 + lane_no], string.sub(loc, 3), string.sub(loc, 3))
if not r[1] then return {'found'} end
local f = fields_of(r[1][2])
return {'spec', f['b'] or ''}
