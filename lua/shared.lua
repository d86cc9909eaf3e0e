--[[ shared: helpers every transition script starts with (prepended at load time, after
  the script's own '#!lua' line; this file is not a transition and is never run alone).
]]

-- Milliseconds on the Redis clock: due times and timestamps never use a client's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Priority lanes: KEYS[1 + n] is lane number n (0-9), KEYS[LANE_MAP] the lane map, in
-- every script that takes the lanes. Lane numbers are not in priority order: 0, 1, 2
-- kept their meaning (high, normal, low = levels 2, 5, 8) when the other levels came,
-- so stored references stay valid. LANE_ORDER lists them most urgent first (level 1 to
-- 10; streamq/priority.py holds the same table).
local LANES = 10
local LANE_MAP = 11
local LANE_ORDER = {3, 0, 4, 5, 1, 6, 7, 2, 8, 9}

-- Note in the lane map (a STRING bitmap) that lane number n may have entries no consumer
-- has read: the claim reads only the lanes whose bit is set. Every transition that adds
-- to a lane calls this.
local function mark_lane(map, n)
  redis.call('SETBIT', map, n, 1)
end

-- A lane entry's fields: j job_id, d payload, m 'attempts|failed|stalls|ms since
-- creation|backoff|type' [, e last error]. backoff (b) is opaque to Lua and carried
-- as is: 'base_ms:cap_ms:j:timeout_ms' (trailing parts optional), so the job's own
-- timeout rides along.
-- Entries written by hand with separate a/n/s/t/b/y fields are read too.
local function fields_of(raw)
  local f = {}
  for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
  if f['m'] then
    f['a'], f['n'], f['s'], f['t'], f['b'], f['y'] =
      string.match(f['m'], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  end
  return f
end

-- The m field of an entry rebuilt from fields_of's table.
local function meta_of(f)
  return (f['a'] or '1') .. '|' .. (f['n'] or '0') .. '|' .. (f['s'] or '0') .. '|' ..
    (f['t'] or '0') .. '|' .. (f['b'] or '') .. '|' .. (f['y'] or '')
end

-- One events entry per 100 jobs of a batch transition (j/y/a: space-separated ids,
-- types, attempts): the stream is capped in entries, so this bounds its memory.
local function emit_batch(events, maxlen, name, ids, types, att)
  if maxlen == '0' then return end
  for s = 1, #ids, 100 do
    local e = math.min(#ids, s + 99)
    redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'ev', name,
      'j', table.concat(ids, ' ', s, e), 'y', table.concat(types, ' ', s, e),
      'a', table.concat(att, ' ', s, e))
  end
end

-- A token bucket (HASH tk = tokens, ts = ms of the last update) shared by every worker:
-- the tokens available at now_ms, refilled at rate per second up to burst. Used by the
-- queue-wide limiter (claim) and by the limiters of named downstreams (limiter_take).
local function bucket_level(key, rate, burst, now)
  local state = redis.call('HMGET', key, 'tk', 'ts')
  local tokens = tonumber(state[1]) or burst
  local ts = tonumber(state[2]) or now
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  end
  return tokens
end

-- Store a bucket's level after a take. A missing bucket reads as full, so the key may
-- only expire once a full refill would have happened anyway (burst / rate after this
-- write; 1 s of slack): an idle spell then never grants more than the rate did, and at
-- most burst + rate x W tokens are taken in any window W.
local function bucket_store(key, tokens, now, rate, burst)
  redis.call('HSET', key, 'tk', string.format('%.6f', tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
end

-- Milliseconds until a bucket at this level holds one whole token.
local function bucket_wait_ms(tokens, rate)
  return math.max(1, math.ceil((1 - tokens) * 1000 / rate))
end
