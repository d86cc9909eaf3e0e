#!lua flags=allow-oom
--[[ resume: unpause a queue and wake its idle workers at once.

  KEYS[1] paused    STRING
  KEYS[2] control   STREAM (capped)
  Returns: 1 if the queue was paused, 0 if it was not.
]]
local was = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 64, '*', 'resume', 1)
return was
