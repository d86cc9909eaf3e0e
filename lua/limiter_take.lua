#!lua
--[[ limiter_take: take one token from the token bucket of a named downstream (an SMS
  provider), shared by every worker of the queue; the same bucket logic as the queue's
  own limiter in claim (shared.lua). The caller waits the returned time and asks again.

  KEYS[1] limiter   HASH tk (tokens), ts (ms); expires burst / rate (+1 s) after its last
                    use, when it would be full anyway
  ARGV[1] rate (tokens/s, > 0)   ARGV[2] burst (tokens, >= 1)
  Returns: 0 when a token was taken, else the ms until one is available.
]]
local limiter = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local tokens = bucket_level(limiter, rate, burst, now)
if tokens < 1 then
  bucket_store(limiter, tokens, now, rate, burst)
  return bucket_wait_ms(tokens, rate)
end
bucket_store(limiter, tokens - 1, now, rate, burst)
return 0
