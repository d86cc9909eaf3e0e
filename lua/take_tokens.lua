#!lua flags=allow-oom
--[[ take_tokens: take up to N tokens from a partitioned queue's queue-wide token bucket,
  after putting back the tokens an earlier take granted but no job used. The bucket
  lives in the queue's home (partition 0). A one-partition queue's claim takes its
  tokens itself, in the same call; a partitioned queue's claims run in other slots, so
  its workers take tokens here first and then claim at most that many jobs. Together
  that keeps at most burst + rate x W job starts in any window of W seconds, across
  partitions and processes. allow-oom: workers must drain a full Redis.
  Also the bucket of a named downstream (an SMS provider's, ``downstream_limiter``): an
  SMS broadcast takes one token per recipient here (ARGV[4] 0), gathering a request's
  tokens as they are granted, so the provider's limit holds per message.

  KEYS[1] limiter   HASH  tk (tokens), ts (ms, Redis clock); shared.lua's bucket (expires
                    burst / rate (+1 s) after its last write, when it would be full anyway)
  ARGV[1] rate (jobs/s, > 0)   ARGV[2] burst (tokens)   ARGV[3] wanted (>= 0)
  ARGV[4] handed back (>= 0: tokens granted earlier that no job used)
  Returns: {granted, wait_ms}: granted >= 1 with wait 0; or 0 with the ms until the next
    token (0 when nothing was wanted)
]]
local limiter = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted, back = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
-- the same bucket as a one-partition queue's claim uses (shared.lua)
local tokens = math.min(burst, bucket_level(limiter, rate, burst, now) + back)
local granted = math.min(wanted, math.floor(tokens))
local wait = 0
if granted < 1 then
  granted = 0
  if wanted > 0 then
    wait = bucket_wait_ms(tokens, rate)
  end
end
bucket_store(limiter, tokens - granted, now, rate, burst)
return {granted, wait}
