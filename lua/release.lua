#!lua flags=allow-oom
--[[ release: hand back entries this worker fetched but will not finish (shutdown:
  not yet started, or cut at the grace deadline), so another worker takes them at
  once instead of after the visibility timeout. Each goes back to the tail of its
  lane unchanged (an interrupted run uses up neither an attempt nor a stall).

  KEYS[1..3] lanes high, normal, low   STREAM
  KEYS[4] moves   HASH
  KEYS[4 + i] index bucket of the i-th entry's job   HASH
  ARGV[1] group  ARGV[2] consumer  ARGV[3] N, then per entry: lane, entry_id
  Returns: number of entries handed back.
]]
local moves = KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local released = 0
for i = 1, tonumber(ARGV[3]) do
  local lane_no = tonumber(ARGV[2 + 2 * i])
  local lane, id = KEYS[1 + lane_no], ARGV[3 + 2 * i]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    local r = redis.call('XRANGE', lane, id, id)
    redis.call('XACK', lane, group, id)
    if r[1] then
      local raw = r[1][2]
      local job_id, delta = nil, 0
      for j = 1, #raw, 2 do
        if raw[j] == 'j' then job_id = raw[j + 1] end
        if raw[j] == 't' then delta = tonumber(raw[j + 1]) or 0 end
      end
      local created = tonumber(string.match(id, '^(%d+)')) - delta
      for j = 1, #raw, 2 do
        if raw[j] == 't' then raw[j + 1] = math.max(0, now - created) end
      end
      local new_id = redis.call('XADD', lane, '*', unpack(raw))
      redis.call('XDEL', lane, id)
      if job_id then
        redis.call('HSET', KEYS[4 + i], job_id, lane_no .. ':' .. new_id)
        redis.call('HDEL', moves, job_id)
      end
      released = released + 1
    end
  end
end
return released
