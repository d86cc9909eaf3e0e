#!lua flags=allow-oom
--[[ reclaim: recover the entries of dead or stuck workers.
  At most one sweep per lock period across all workers (SET NX PX). Entries idle
  longer than the visibility timeout (heartbeats keep live ones fresh) go back to the
  tail of their lane with their stall count bumped, so any worker with a free slot
  takes them; an entry that has now stalled max_stalled times is instead claimed by
  the sweeper (XCLAIM with the idle guard) and returned for the caller to dead-letter.
  A pending entry whose data was deleted is acknowledged away and reported.
  allow-oom: recovery must work on a full Redis.

  KEYS[1..3] lanes high, normal, low   STREAM
  KEYS[4] index   HASH
  KEYS[5] lock    STRING
  ARGV[1] group  ARGV[2] sweeper consumer  ARGV[3] min idle (ms)  ARGV[4] max_stalled
  ARGV[5] lock period (ms)  ARGV[6] max entries per lane per sweep
  Returns: {-1} if another worker holds the sweep lock, else
    {requeued, {job_id, stalls, previous owner, ...}, {lane, entry_id, job_id, stalls, ...} to dead-letter,
     orphaned count}
]]
local index, lock = KEYS[4], KEYS[5]
local group, sweeper = ARGV[1], ARGV[2]
local min_idle, max_stalled = tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', lock, sweeper, 'NX', 'PX', tonumber(ARGV[5])) then
  return {-1}
end
local requeued, to_dead = {}, {}
local orphaned = 0
for lane_no = 0, 2 do
  local lane = KEYS[1 + lane_no]
  local pend = redis.pcall('XPENDING', lane, group, 'IDLE', min_idle, '-', '+', tonumber(ARGV[6]))
  if not pend.err then
    for _, p in ipairs(pend) do
      local id, owner = p[1], p[2]
      local r = redis.call('XRANGE', lane, id, id)
      if not r[1] then
        redis.call('XACK', lane, group, id)
        orphaned = orphaned + 1
      else
        local raw = r[1][2]
        local f = {}
        for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
        local stalls = (tonumber(f['s']) or 0) + 1
        if stalls >= max_stalled then
          redis.call('XCLAIM', lane, group, sweeper, min_idle, id, 'JUSTID')
          to_dead[#to_dead + 1] = lane_no
          to_dead[#to_dead + 1] = id
          to_dead[#to_dead + 1] = f['j']
          to_dead[#to_dead + 1] = stalls
        else
          for i = 1, #raw, 2 do
            if raw[i] == 's' then raw[i + 1] = stalls end
          end
          local new_id = redis.call('XADD', lane, '*', unpack(raw))
          redis.call('HSET', index, f['j'], lane_no .. ':' .. new_id)
          redis.call('XACK', lane, group, id)
          redis.call('XDEL', lane, id)
          requeued[#requeued + 1] = f['j']
          requeued[#requeued + 1] = stalls
          requeued[#requeued + 1] = owner
        end
      end
    end
  end
end
return {#requeued / 3, requeued, to_dead, orphaned}
