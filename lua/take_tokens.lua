#!lua flags=allow-oom
--[[ take_tokens: take up to N tokens from a partitioned queue's queue-wide token bucket,
  after putting back the tokens an earlier take granted but no job used. The bucket
  lives in the queue's home (partition 0). A one-partition queue's claim takes its
  tokens itself, in the same call; a partitioned queue's claims run in other slots, so
  its workers take tokens here first and then claim at most that many jobs. Together
  that keeps at most burst + rate x W job starts in any window of W seconds, across
  partitions and processes. allow-oom: workers must drain a full Redis.

  KEYS[1] limiter   HASH  tk (tokens), ts (ms, Redis clock)
  ARGV[1] rate (jobs/s, > 0)   ARGV[2] burst (tokens)   ARGV[3] wanted (>= 0)
  ARGV[4] handed back (>= 0: tokens granted earlier that no job used)
  Returns: {granted, wait_ms}: granted >= 1 with wait 0; or 0 with the ms until the next
    token (0 when nothing was wanted)
]]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted, back = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local state = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = tokens + (now - ts) * rate / 1000
end
tokens = math.min(burst, tokens + back)
local granted = math.min(wanted, math.floor(tokens))
local wait = 0
if granted < 1 then
  granted = 0
  if wanted > 0 then
    wait = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
  end
end
redis.call('HSET', KEYS[1], 'tk', string.format('%.6f', tokens - granted), 'ts', now)
-- kept while a full bucket is not yet refilled (an expired bucket starts full)
redis.call('PEXPIRE', KEYS[1], math.max(60000, 2 * math.ceil(burst * 1000 / rate)))
return {granted, wait}
