#!lua flags=allow-oom
--[[ claim: promote due delayed jobs, then hand up to COUNT jobs to one consumer, within
  the queue-wide token bucket: first entries whose worker died or went silent (idle
  longer than the visibility timeout; at most one claimer per lock period looks), taken
  over in place so they restart before any backlog; then waiting jobs, the most urgent
  lane first (LANE_ORDER). Only lanes the lane map marks are read, so ten levels cost
  what the lanes in use cost; a lane that had fewer entries than asked for is unmarked,
  and when the marked lanes give nothing every other lane is read too. An entry delivered max_stalled times already is not run
  again: it is returned for the caller to dead-letter. A payload over the size cap is
  not sent to the worker (only its size). Never blocks: when nothing is available it
  returns what an idle worker needs to wait for. allow-oom: workers must drain a full
  Redis.

  KEYS[1..10] lanes, by lane number   STREAM (consumer group ARGV[1]; lua/shared.lua:
                         LANE_ORDER is their priority order)
  KEYS[11] lane map      STRING bitmap, bit i set: lane number i may have unread entries
  KEYS[12] events         STREAM (capped at ARGV[7]; 0 = no events): one entry per 100 jobs
                         for 'active' (j/y/a: space-separated ids, types, attempts); one
                         'stalled' entry per taken-over job
  KEYS[13] delayed        ZSET
  KEYS[14] delayed data   HASH
  KEYS[15] paused         STRING (exists = paused)
  KEYS[16] limiter        HASH  tk (tokens), ts (ms); expires burst / rate (+1 s) after
                         its last write, when it would be full anyway
  KEYS[17] control        STREAM
  KEYS[18] moves         HASH  job_id -> location, for jobs moved since they were added
  KEYS[19] reclaim lock  STRING
  ARGV[1] group   ARGV[2] consumer   ARGV[3] count (>= 1)
  ARGV[4] rate (jobs/s; 0 = unlimited)   ARGV[5] burst (tokens)
  ARGV[6] max jobs to promote in this call   ARGV[7] events max length
  ARGV[8] visibility timeout (ms)   ARGV[9] max_stalled   ARGV[10] reclaim lock period (ms)
  ARGV[11] payload size cap (bytes)
  Returns one of:
    {1, {lane, entry_id, {field, value, ...}, stalls if taken over (else 0), oversize bytes
        (0 = ok), ...}, {lane, entry_id, job_id, stalls, ...} to dead-letter as stalled}
    {0, ms_until_next_due (-1 none), pending, id_control, {last id of each lane, by lane
       number}}: nothing available; pending > 0 when some lane has entries held by
       consumers (maybe to take over later)
    {-1, ms_until_next_due}  queue paused
    {-2, wait_ms}  rate limited: no token for wait_ms
]]
local map = KEYS[11]
local events, delayed, ddata = KEYS[12], KEYS[13], KEYS[14]
local paused, limiter, control, moves, lock = KEYS[15], KEYS[16], KEYS[17], KEYS[18], KEYS[19]
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local evmax = ARGV[7]
local min_idle, max_stalled, cap = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[11])
local ev_ids, ev_types, ev_att = {}, {}, {}
local now = now_ms()

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
    mark_lane(map, lane)
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
  tokens = bucket_level(limiter, rate, burst, now)
  local whole = math.floor(tokens)
  if whole < 1 then
    bucket_store(limiter, tokens, now, rate, burst)
    return {-2, bucket_wait_ms(tokens, rate)}
  end
  count = math.min(count, whole)
end

local claimed, to_dead = {}, {}
local got = 0

-- who the job is and which attempt, from the order every transition writes
local function describe(raw)
  if raw[1] == 'j' and raw[5] == 'm' then
    local failed, jtype = string.match(raw[6], '^[^|]*|([^|]*)|[^|]*|[^|]*|[^|]*|(.*)$')
    return raw[2], failed, jtype
  end
  local f = {}
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  return f['j'] or '', f['n'], f['y']
end

local function take(lane, entry, deliveries)
  local raw = entry[2]
  local oversize = 0
  for i = 1, #raw, 2 do
    if raw[i] == 'd' and #raw[i + 1] > cap then
      oversize = #raw[i + 1]
      raw[i + 1] = ''  -- the worker dead-letters it by its size; it never holds the bytes
    end
  end
  claimed[#claimed + 1] = lane
  claimed[#claimed + 1] = entry[1]
  claimed[#claimed + 1] = raw
  claimed[#claimed + 1] = deliveries
  claimed[#claimed + 1] = oversize
  got = got + 1
  if evmax ~= '0' then
    local jid, failed, jtype = describe(raw)
    ev_ids[#ev_ids + 1] = jid
    ev_types[#ev_types + 1] = jtype or ''
    ev_att[#ev_att + 1] = (tonumber(failed) or 0) + 1
    if deliveries > 0 then
      redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'stalled', 'j', jid,
        'y', jtype or '', 'a', (tonumber(failed) or 0) + 1, 'stalls', deliveries)
    end
  end
end

-- take over entries of dead or silent workers, in place: no one else can complete
-- them now (completion is fenced on ownership), and they run before the backlog
if redis.call('SET', lock, consumer, 'NX', 'PX', ARGV[10]) then
  for _, lane in ipairs(LANE_ORDER) do
    if got >= count then break end
    local pend = redis.pcall('XPENDING', KEYS[1 + lane], group, 'IDLE', min_idle, '-', '+',
      count - got)
    if not pend.err then
      for _, p in ipairs(pend) do
        local id = p[1]
        local r = redis.call('XRANGE', KEYS[1 + lane], id, id)
        if r[1] then
          -- stalls so far: earlier runs of this job (meta s, kept when the sweep re-queued
          -- it) plus every delivery of this entry, whose holders all went silent
          local meta = nil
          for i = 1, #r[1][2], 2 do
            if r[1][2][i] == 'm' then meta = r[1][2][i + 1] end
          end
          local earlier = meta and tonumber(string.match(meta, '^[^|]*|[^|]*|([^|]*)|')) or 0
          local stalls = (earlier or 0) + tonumber(p[4])
          if stalls >= max_stalled then
            redis.call('XCLAIM', KEYS[1 + lane], group, consumer, min_idle, id, 'JUSTID')
            to_dead[#to_dead + 1] = lane
            to_dead[#to_dead + 1] = id
            to_dead[#to_dead + 1] = (describe(r[1][2]))
            to_dead[#to_dead + 1] = stalls
          else
            local c = redis.call('XCLAIM', KEYS[1 + lane], group, consumer, min_idle, id)
            if c[1] then
              take(lane, c[1], stalls)
            end
          end
        else
          redis.call('XACK', KEYS[1 + lane], group, id)  -- its data was deleted: nothing to run
        end
      end
    end
  end
  if got >= count then
    -- our slots are full and more may be waiting to be taken over: let the next
    -- claimer look at once instead of after the lock period
    redis.call('DEL', lock)
  end
end

-- read lane n for new entries; true when it gave all that was asked (it may have more)
local function read_lane(lane)
  local want = count - got
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
    'STREAMS', KEYS[1 + lane], '>')
  if r then
    local entries = r[1][2]
    for _, entry in ipairs(entries) do
      take(lane, entry, 0)
    end
    return #entries >= want
  end
  return false
end

-- the lane map as a 16-bit number: lane number n is bit 15 - n (SETBIT counts from the
-- first byte's high bit); tested lazily, since the loop stops once count is reached
local bits = redis.call('BITFIELD_RO', map, 'GET', 'u16', 0)[1]
local function marked(lane)
  return bit.band(bits, bit.rshift(32768, lane)) ~= 0
end
for _, lane in ipairs(LANE_ORDER) do
  if got >= count then break end
  if marked(lane) and not read_lane(lane) then
    redis.call('SETBIT', map, lane, 0)  -- nothing unread is left in it
  end
end

-- the id an idle worker's XREAD waits after: the stream's last entry, or 0-0 when it is
-- empty (every entry after it is new: entries are deleted, never inserted, behind it)
local function last_id(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  return last[1] and last[1][1] or '0-0'
end

local ids = nil
if got == 0 then
  -- nothing in the marked lanes: read the other lanes that hold entries too (an entry
  -- added by hand, or by an engine from before the lane map, is found here) and mark
  -- one that has more. Their last ids are what an idle worker waits after.
  ids = {}
  for lane = 1, LANES do
    ids[lane] = last_id(KEYS[lane])
  end
  for _, lane in ipairs(LANE_ORDER) do
    if got >= count then break end
    if ids[lane + 1] ~= '0-0' and not marked(lane) and read_lane(lane) then
      mark_lane(map, lane)
    end
  end
end

if tokens ~= nil then
  bucket_store(limiter, tokens - got, now, rate, burst)
end

if got > 0 or #to_dead > 0 then
  emit_batch(events, evmax, 'active', ev_ids, ev_types, ev_att)
  return {1, claimed, to_dead}
end

local pending = 0
for lane = 1, LANES do
  -- an empty stream has nothing to take over (a pending entry whose data was deleted
  -- is the upkeep sweep's: lua/reclaim.lua acknowledges it away)
  if ids[lane] ~= '0-0' then
    local s = redis.pcall('XPENDING', KEYS[lane], group)
    if not s.err then pending = tonumber(s[1]) end
    if pending > 0 then break end
  end
end
return {0, next_due(), pending, last_id(control), ids}
