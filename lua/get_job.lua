#!lua flags=no-writes
--[[ get_job: read one job's state and facts wherever it lives.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] moves          HASH
  KEYS[13] delayed        ZSET
  KEYS[14] delayed data   HASH
  KEYS[15] index bucket of the job   HASH
  KEYS[16] job record     STRING 'state|attempts made|max|created|finished|type|dead id|error'
  KEYS[17] delivery report of the job   HASH (lua/delivery_report): read for a completed job
  ARGV[1] group  ARGV[2] job_id
  Returns: {} if unknown or expired; {'waiting_children'} for a flow parent waiting for
    its children; else {state, field, value, ...} with fields
    a (max attempts), n (failed attempts), s (stalls: earlier runs' plus this entry's
    take-overs in place), t (created ms), e (last error),
    f (finished ms), due (ms), x (dead entry id), lane, id (entry id), dc (deliveries), y (type),
    and for a completed job with a delivery report its fields prefixed 'd.' (d.s status ...)
]]
local moves, delayed, ddata, bucket, rec = KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local group, job_id = ARGV[1], ARGV[2]
local loc = redis.call('HGET', moves, job_id) or redis.call('HGET', bucket, job_id)
if not loc then
  local r = redis.call('GET', rec)
  if not r then return {} end
  local st, made, max_attempts, created, finished, jtype, dead_id, err =
    string.match(r, '^(%a+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not st then return {} end
  local out = {st, 'n', made, 'a', max_attempts, 't', created, 'f', finished, 'y', jtype,
    'x', dead_id, 'e', err}
  if st == 'completed' then
    -- HMGET of the known fields (not HGETALL): the same ACL as the record's other reads
    local names = {'s', 'n', 'f', 'c', 't', 'm', 'p'}
    local d = redis.call('HMGET', KEYS[17], unpack(names))
    if d[1] then
      for i, name in ipairs(names) do
        out[#out + 1] = 'd.' .. name
        out[#out + 1] = d[i] or ''
      end
    end
  end
  return out
end
if loc == 'c' then
  return {'waiting_children'}  -- a flow parent: the rest is in its flow hash (flows/)
end
if loc == 'd' then
  local packed = redis.call('HGET', ddata, job_id)
  local out = {'delayed', 'due', redis.call('ZSCORE', delayed, job_id) or ''}
  if packed then
    local e = cmsgpack.unpack(packed)
    local kv = {{'a', e[3]}, {'n', e[4]}, {'s', e[5]}, {'t', e[6]}, {'e', e[9]}, {'lane', e[8]},
      {'y', e[10] or ''}}
    for _, pair in ipairs(kv) do
      out[#out + 1] = pair[1]
      out[#out + 1] = tostring(pair[2])
    end
  end
  return out
end
local lane_no = tonumber(string.sub(loc, 1, 1))
local lane, id = KEYS[1 + lane_no], string.sub(loc, 3)
local out = {'waiting', 'lane', lane_no, 'id', id}
local p = redis.pcall('XPENDING', lane, group, id, id, 1)
local dc = 0
if not p.err and p[1] then
  out[1] = 'active'
  out[#out + 1] = 'dc'
  out[#out + 1] = p[1][4]
  dc = tonumber(p[1][4])
end
local r = redis.call('XRANGE', lane, id, id)
if r[1] then
  local f = fields_of(r[1][2])
  f['t'] = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
  if dc > 1 then
    -- every delivery of this entry after the first was a take-over from a silent worker
    f['s'] = (tonumber(f['s']) or 0) + dc - 1
  end
  for _, k in ipairs({'a', 'n', 's', 't', 'b', 'y', 'e'}) do
    if f[k] then
      out[#out + 1] = k
      out[#out + 1] = f[k]
    end
  end
end
return out
