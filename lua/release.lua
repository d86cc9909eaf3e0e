#!lua flags=allow-oom
--[[ release: hand back entries this worker fetched but will not finish (shutdown:
  not yet started, or cut at the grace deadline), so another worker takes them at
  once instead of after the visibility timeout. Each goes back to the tail of its
  lane unchanged (an interrupted run uses up neither an attempt nor a stall; stalls
  from earlier take-overs of the entry are kept, as is b with the job's own timeout).

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] moves   HASH
  KEYS[12 + i] index bucket of the i-th entry's job   HASH
  ARGV[1] group  ARGV[2] consumer  ARGV[3] N, then per entry: lane, entry_id
  Returns: number of entries handed back.
]]
local moves = KEYS[12]
local group, consumer = ARGV[1], ARGV[2]
local now = now_ms()
local released = 0
for i = 1, tonumber(ARGV[3]) do
  local lane_no = tonumber(ARGV[2 + 2 * i])
  local lane, id = KEYS[1 + lane_no], ARGV[3 + 2 * i]
  local p = redis.call('XPENDING', lane, group, id, id, 1)
  if p[1] and p[1][2] == consumer then
    local r = redis.call('XRANGE', lane, id, id)
    redis.call('XACK', lane, group, id)
    if r[1] then
      local f = fields_of(r[1][2])
      local job_id = f['j']
      local created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
      f['t'] = math.max(0, now - created)
      -- take-overs in place of this entry (deliveries after the first) were real stalls
      f['s'] = (tonumber(f['s']) or 0) + math.max(0, tonumber(p[1][4]) - 1)
      local new_id
      if f['e'] then
        new_id = redis.call('XADD', lane, '*', 'j', job_id or '', 'd', f['d'] or '', 'm', meta_of(f),
          'e', f['e'])
      else
        new_id = redis.call('XADD', lane, '*', 'j', job_id or '', 'd', f['d'] or '', 'm', meta_of(f))
      end
      redis.call('XDEL', lane, id)
      mark_lane(KEYS[11], lane_no)
      if job_id then
        redis.call('HSET', KEYS[12 + i], job_id, lane_no .. ':' .. new_id)
        redis.call('HDEL', moves, job_id)
      end
      released = released + 1
    end
  end
end
return released
