#!lua flags=allow-oom
--[[ cancel: make a waiting or delayed job never run.
  A job already delivered to a worker (in the PEL) is active and cannot be cancelled.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events         STREAM (capped at ARGV[4]; 0 = no events)
  KEYS[13] delayed        ZSET
  KEYS[14] delayed data   HASH
  KEYS[15] stats          HASH  cancelled counter
  KEYS[16] moves          HASH
  KEYS[17] index bucket of the job   HASH
  KEYS[18] job record    STRING 'cancelled|attempts made|max|created|finished|type||'
  ARGV[1] group  ARGV[2] job_id  ARGV[3] record ttl (ms; 0 = keep no record)
  ARGV[4] events max length
  Returns: 1 cancelled; 0 unknown or already finished; -1 active (running now);
    {-2, spec} a job of a flow (nothing done: lua/flow_cancel.lua settles its flow too;
    spec '' for a parent waiting for its children).
]]
local events, delayed, ddata, stats = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local moves, bucket, rec = KEYS[16], KEYS[17], KEYS[18]
local group, job_id = ARGV[1], ARGV[2]
local loc = redis.call('HGET', moves, job_id) or redis.call('HGET', bucket, job_id)
if not loc then
  return 0
end
if loc == 'c' then
  return {-2, ''}  -- a flow parent waiting for its children: lua/flow_cancel.lua
end
local attempts, created, made, jtype = '', '', 0, ''
if loc == 'd' then
  local packed = redis.call('HGET', ddata, job_id)
  if packed then
    local e = cmsgpack.unpack(packed)
    if string.find(e[7] or '', '/', 1, true) then
      return {-2, e[7]}
    end
    attempts, made, created, jtype = e[3], e[4], e[6], e[10] or ''
  end
  redis.call('ZREM', delayed, job_id)
  redis.call('HDEL', ddata, job_id)
else
  local lane_no = tonumber(string.sub(loc, 1, 1))
  local lane, id = KEYS[1 + lane_no], string.sub(loc, 3)
  local p = redis.pcall('XPENDING', lane, group, id, id, 1)
  if not p.err and p[1] then
    return -1
  end
  local r = redis.call('XRANGE', lane, id, id)
  if r[1] then
    local f = fields_of(r[1][2])
    if string.find(f['b'] or '', '/', 1, true) then
      return {-2, f['b']}
    end
    attempts, made, jtype = f['a'] or '', f['n'] or 0, f['y'] or ''
    created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
  end
  redis.call('XDEL', lane, id)
end
redis.call('HDEL', bucket, job_id)
redis.call('HDEL', moves, job_id)
local now = now_ms()
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', rec, 'cancelled|' .. made .. '|' .. attempts .. '|' .. created .. '|' .. now ..
    '|' .. jtype .. '||', 'PX', ARGV[3])
end
redis.call('HINCRBY', stats, 'cancelled', 1)
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', tonumber(ARGV[4]), '*', 'ev', 'cancelled',
    'j', job_id, 'y', jtype, 'a', made)
end
return 1
