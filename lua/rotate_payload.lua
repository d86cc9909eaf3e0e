#!lua
--[[ rotate_payload: replace one stored payload by its re-encryption under the active key,
  only while it is still exactly the payload that was read (compare-and-set), leaving
  the job's place and state as they are; and move the job's blind-index entries to the
  active key id. Where the payload is (ARGV[1]):
    'delayed'  the job's delayed data (HASH field) is rewritten in place: due time,
               score and everything else unchanged.
    'lane'     a waiting entry. An entry in a consumer's pending list (an active job) is
               never touched. Stream entries cannot be edited: the entry is re-added at
               the tail of the SAME lane with the same fields and the same creation time
               (meta t recomputed), the old one deleted, and the job's location (index
               bucket; the moves hash dropped) pointed at the new entry.
    'dead'     a dead letter, re-added at the tail of the dead stream with the same
               fields, the old one deleted, and the failed record's dead entry id
               updated (its TTL kept).
    'schedule' a schedule's stored payload (field d of its hash, KEYS[2]), rewritten in
               place; its version token is kept (the payload's bytes change, not what
               they hold).
    'flow'     the payload a flow parent keeps while it waits for its children (field d
               of its flow hash, KEYS[2]), rewritten in place.
  Not allow-oom: it is maintenance, and a re-added entry briefly takes memory.

  KEYS[1] lane of the entry ('lane'; any lane otherwise)   STREAM (consumer group ARGV[4])
  KEYS[2] delayed data   HASH   job_id -> cmsgpack entry ('schedule': the schedule's HASH;
          'flow': the parent's flow HASH)
  KEYS[3] dead           STREAM
  KEYS[4] moves          HASH
  KEYS[5] index bucket of the job   HASH
  KEYS[6] job record     STRING 'failed|made|max|created|finished|type|dead id|error'
  KEYS[7..] blind-index sets in pairs: old key id's set, then the active key id's set
            ZSET job_id scored by expiry (ms)
  ARGV[1] where ('delayed' | 'lane' | 'dead' | 'schedule' | 'flow')
  ARGV[2] job_id (a schedule's id for 'schedule')
  ARGV[3] entry id ('lane', 'dead')  ARGV[4] group  ARGV[5] lane number ('lane')
  ARGV[6] the payload as read (bytes)  ARGV[7] its replacement (bytes)
  Returns: 1 rewritten; 0 the payload changed or is gone (nothing done);
    -1 the entry is active (in a consumer's pending list: left as it is).
]]
local lane, ddata, dead, moves, bucket, rec = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local where, job_id, id, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old, new = ARGV[6], ARGV[7]

-- the entry's fields with the payload replaced and, when 'now' is given, its meta t
-- (ms between creation and the entry id) recomputed for an entry re-added at 'now'
local function rebuilt(raw, now)
  local f = fields_of(raw)
  local has_m = f['m'] ~= nil
  local t = nil
  if now then
    t = math.max(0, now - (tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)))
    f['t'] = t
  end
  local out = {}
  for i = 1, #raw, 2 do
    local k, v = raw[i], raw[i + 1]
    if k == 'd' then
      v = new
    elseif t and k == 'm' then
      v = meta_of(f)
    elseif t and k == 't' and not has_m then
      v = t
    end
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end

-- the ms part of the id the next entry of 'stream' gets: now, or the stream's last
-- generated id when that is later. The re-added entry is given this ms explicitly
-- ('<ms>-*', Redis 7.0), so its meta t (ms between creation and the entry id) is exact:
-- with '*' the server's clock may pass a millisecond between TIME and XADD.
local function next_ms(stream, now)
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local last = tonumber(string.match(info[i + 1], '^(%d+)'))
      if last > now then return last end
    end
  end
  return now
end

local function matches(raw)
  local f = {}
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  return f['j'] == job_id and f['d'] == old
end

if where == 'delayed' then
  local packed = redis.call('HGET', ddata, job_id)
  if not packed then return 0 end
  local e = cmsgpack.unpack(packed)
  if e[1] ~= job_id or e[2] ~= old then return 0 end
  e[2] = new
  redis.call('HSET', ddata, job_id, cmsgpack.pack(e))
elseif where == 'lane' then
  local r = redis.call('XRANGE', lane, id, id)
  if not r[1] or not matches(r[1][2]) then return 0 end
  local p = redis.pcall('XPENDING', lane, group, id, id, 1)
  if not p.err and p[1] then return -1 end  -- (no group yet: nobody holds it)
  local at = next_ms(lane, now_ms())
  local new_id = redis.call('XADD', lane, at .. '-*', unpack(rebuilt(r[1][2], at)))
  redis.call('XDEL', lane, id)
  redis.call('HSET', bucket, job_id, ARGV[5] .. ':' .. new_id)
  redis.call('HDEL', moves, job_id)
elseif where == 'dead' then
  local r = redis.call('XRANGE', dead, id, id)
  if not r[1] or not matches(r[1][2]) then return 0 end
  local new_id = redis.call('XADD', dead, '*', unpack(rebuilt(r[1][2], nil)))
  redis.call('XDEL', dead, id)
  local record = redis.call('GET', rec)
  if record then
    local head, dead_id, tail = string.match(record,
      '^(failed|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|)([^|]*)(|.*)$')
    if dead_id == id then
      redis.call('SET', rec, head .. new_id .. tail, 'KEEPTTL')
    end
  end
elseif where == 'schedule' or where == 'flow' then
  if redis.call('HGET', ddata, 'd') ~= old then return 0 end
  redis.call('HSET', ddata, 'd', new)
else
  return redis.error_reply('rotate_payload: unknown place')
end

if #KEYS > 6 then
  local now = now_ms()
  for i = 7, #KEYS - 1, 2 do
    local score = redis.call('ZSCORE', KEYS[i], job_id)
    if score then
      redis.call('ZADD', KEYS[i + 1], score, job_id)
      redis.call('ZREM', KEYS[i], job_id)
      local ttl = tonumber(score) - now
      if ttl > 0 and redis.call('PTTL', KEYS[i + 1]) < ttl then
        redis.call('PEXPIRE', KEYS[i + 1], math.ceil(ttl))
      end
    end
  end
end
return 1
