#!lua flags=allow-oom
--[[ claim: promote due delayed jobs, then hand up to COUNT waiting jobs to one consumer,
  high lane first, within the queue-wide token bucket. Never blocks: when nothing is
  available it returns what an idle worker needs to wait for (stream ids to XREAD
  after, ms until the next due job). allow-oom: workers must drain a full Redis.

  KEYS[1..3] lanes high, normal, low   STREAM (consumer group ARGV[1])
  KEYS[4] events         STREAM (capped at ARGV[7]; 0 = no events): one 'active' entry per
                         100 jobs, j/y/a holding space-separated job ids, types, attempts
  KEYS[5] delayed        ZSET
  KEYS[6] delayed data   HASH
  KEYS[7] paused         STRING (exists = paused)
  KEYS[8] limiter        HASH  tk (tokens), ts (ms)
  KEYS[9] control        STREAM
  KEYS[10] moves         HASH  job_id -> location, for jobs moved since they were added
  ARGV[1] group   ARGV[2] consumer   ARGV[3] count (>= 1)
  ARGV[4] rate (jobs/s; 0 = unlimited)   ARGV[5] burst (tokens)
  ARGV[6] max jobs to promote in this call   ARGV[7] events max length
  Returns one of:
    {1, lane, entry_id, {field, value, ...}, lane, entry_id, {...}, ...}  claimed
    {0, ms_until_next_due (-1 none), id_high, id_normal, id_low, id_control}  nothing waiting
    {-1, ms_until_next_due}  queue paused
    {-2, wait_ms}  rate limited: no token for wait_ms
]]
local function emit_batch(name, ids, types, att)
  -- at most 100 jobs an entry: the stream is capped in entries, so this bounds its memory
  for s = 1, #ids, 100 do
    local e = math.min(#ids, s + 99)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'ev', name,
      'j', table.concat(ids, ' ', s, e), 'y', table.concat(types, ' ', s, e),
      'a', table.concat(att, ' ', s, e))
  end
end
local events, delayed, ddata = KEYS[4], KEYS[5], KEYS[6]
local paused, limiter, control, moves = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local evmax = ARGV[7]
local ev_ids, ev_types, ev_att = {}, {}, {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- promote due jobs first, so a due retry competes with new work at once
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
for _, job_id in ipairs(due) do
  local packed = redis.call('HGET', ddata, job_id)
  if packed then
    local e = cmsgpack.unpack(packed)
    local lane = tonumber(e[8])
    local fields = {'j', e[1], 'd', e[2], 'm', e[3] .. '|' .. e[4] .. '|' .. e[5] .. '|' ..
      math.max(0, now - tonumber(e[6])) .. '|' .. e[7] .. '|' .. (e[10] or '')}
    if e[9] ~= '' then
      fields[#fields + 1] = 'e'
      fields[#fields + 1] = e[9]
    end
    local id = redis.call('XADD', KEYS[1 + lane], '*', unpack(fields))
    -- the index bucket still says 'd'; the moves hash says where the job is now
    redis.call('HSET', moves, job_id, lane .. ':' .. id)
    redis.call('HDEL', ddata, job_id)
  end
  redis.call('ZREM', delayed, job_id)
end

local function next_due()
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then
    return math.max(0, tonumber(first[2]) - now)
  end
  return -1
end

if redis.call('EXISTS', paused) == 1 then
  return {-1, next_due()}
end

local tokens = nil
if rate > 0 then
  local state = redis.call('HMGET', limiter, 'tk', 'ts')
  tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  end
  local whole = math.floor(tokens)
  if whole < 1 then
    redis.call('HSET', limiter, 'tk', string.format('%.6f', tokens), 'ts', now)
    redis.call('PEXPIRE', limiter, 60000)
    return {-2, math.max(1, math.ceil((1 - tokens) * 1000 / rate))}
  end
  count = math.min(count, whole)
end

local out = {1}
local got = 0
for lane = 0, 2 do
  if got >= count then break end
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - got,
    'STREAMS', KEYS[1 + lane], '>')
  if r then
    for _, entry in ipairs(r[1][2]) do
      out[#out + 1] = lane
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      got = got + 1
      if evmax ~= '0' then
        local raw = entry[2]
        local jid, failed, jtype
        if raw[1] == 'j' and raw[5] == 'm' then  -- the order every transition writes
          jid = raw[2]
          failed, jtype = string.match(raw[6], '^[^|]*|([^|]*)|[^|]*|[^|]*|[^|]*|(.*)$')
        else
          local f = {}
          for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
          jid, failed, jtype = f['j'] or '', f['n'], f['y']
        end
        ev_ids[#ev_ids + 1] = jid
        ev_types[#ev_types + 1] = jtype or ''
        ev_att[#ev_att + 1] = (tonumber(failed) or 0) + 1
      end
    end
  end
end

if tokens ~= nil then
  redis.call('HSET', limiter, 'tk', string.format('%.6f', tokens - got), 'ts', now)
  redis.call('PEXPIRE', limiter, 60000)
end

if got > 0 then
  emit_batch('active', ev_ids, ev_types, ev_att)
  return out
end

local function last_id(key)
  local info = redis.pcall('XINFO', 'STREAM', key)
  if info.err then return '0-0' end
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end
return {0, next_due(), last_id(KEYS[1]), last_id(KEYS[2]), last_id(KEYS[3]), last_id(control)}
