#!lua flags=allow-oom
--[[ reclaim: the upkeep sweep over entries held by dead or silent workers.
  At most one sweep per lock period across all workers (SET NX PX). Normally a worker
  with a free slot takes such an entry over in place through the claim script, as soon
  as it is idle longer than the visibility timeout. This sweep covers what must happen
  even when no worker claims (all busy, or the queue paused):
    - an entry whose job has stalled max_stalled times (earlier runs kept in meta s,
      plus this entry's deliveries) is claimed by the sweeper (XCLAIM with the idle
      guard) and returned for the caller to dead-letter;
    - an entry idle longer than ARGV[8] (no one took it over) goes back to the tail of
      its lane with its stall count kept, so it shows as waiting and any worker runs it;
    - a pending entry whose data was deleted is acknowledged away;
    - consumers with nothing pending, idle longer than ARGV[6], are removed (never one
      with pending entries: DELCONSUMER would drop them).
  allow-oom: recovery must work on a full Redis.

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events  STREAM (capped at ARGV[9]; 0 = no events)
  KEYS[13] moves   HASH
  KEYS[14] lock    STRING
  ARGV[1] group  ARGV[2] sweeper consumer  ARGV[3] visibility timeout (ms)  ARGV[4] max_stalled
  ARGV[5] lock period (ms)  ARGV[6] idle time (ms) after which an empty consumer is removed
  ARGV[7] max entries per lane per sweep  ARGV[8] idle time (ms) after which an entry is
  re-queued  ARGV[9] events max length
  Returns: {-1} if another worker holds the sweep lock, else
    {{lane, entry_id, job_id, stalls, ...} to dead-letter, {job_id, stalls, previous owner, ...}
     re-queued, orphaned count, consumers removed}
]]
local events, moves, lock = KEYS[12], KEYS[13], KEYS[14]
local group, sweeper = ARGV[1], ARGV[2]
local min_idle, max_stalled = ARGV[3], tonumber(ARGV[4])
local prune_idle, requeue_idle, evmax = tonumber(ARGV[6]), tonumber(ARGV[8]), ARGV[9]
if not redis.call('SET', lock, sweeper, 'NX', 'PX', ARGV[5]) then
  return {-1}
end
local now = now_ms()
local to_dead, requeued = {}, {}
local orphaned, pruned = 0, 0
for _, lane_no in ipairs(LANE_ORDER) do
  local lane = KEYS[1 + lane_no]
  local pend = redis.pcall('XPENDING', lane, group, 'IDLE', min_idle, '-', '+', tonumber(ARGV[7]))
  if not pend.err then
    for _, p in ipairs(pend) do
      local id, owner, idle, deliveries = p[1], p[2], tonumber(p[3]), tonumber(p[4])
      local r = redis.call('XRANGE', lane, id, id)
      if not r[1] then
        redis.call('XACK', lane, group, id)
        orphaned = orphaned + 1
      else
        local f = fields_of(r[1][2])
        local stalls = (tonumber(f['s']) or 0) + deliveries
        if stalls >= max_stalled or not f['j'] or not f['d'] then
          redis.call('XCLAIM', lane, group, sweeper, min_idle, id, 'JUSTID')
          to_dead[#to_dead + 1] = lane_no
          to_dead[#to_dead + 1] = id
          to_dead[#to_dead + 1] = f['j'] or ''
          to_dead[#to_dead + 1] = stalls
        elseif idle >= requeue_idle then
          local created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
          f['s'] = stalls
          f['t'] = math.max(0, now - created)
          local new_id
          if f['e'] then
            new_id = redis.call('XADD', lane, '*', 'j', f['j'], 'd', f['d'], 'm', meta_of(f),
              'e', f['e'])
          else
            new_id = redis.call('XADD', lane, '*', 'j', f['j'], 'd', f['d'], 'm', meta_of(f))
          end
          redis.call('HSET', moves, f['j'], lane_no .. ':' .. new_id)
          mark_lane(KEYS[11], lane_no)
          redis.call('XACK', lane, group, id)
          redis.call('XDEL', lane, id)
          if evmax ~= '0' then
            redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', 'ev', 'stalled', 'j', f['j'],
              'y', f['y'] or '', 'a', (tonumber(f['n']) or 0) + 1, 'stalls', stalls)
          end
          requeued[#requeued + 1] = f['j']
          requeued[#requeued + 1] = stalls
          requeued[#requeued + 1] = owner
        end
      end
    end
  end
  if prune_idle > 0 then
    local consumers = redis.pcall('XINFO', 'CONSUMERS', lane, group)
    if not consumers.err then
      for _, c in ipairs(consumers) do
        local info = {}
        for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
        if info['pending'] == 0 and info['idle'] > prune_idle and info['name'] ~= sweeper then
          redis.call('XGROUP', 'DELCONSUMER', lane, group, info['name'])
          pruned = pruned + 1
        end
      end
    end
  end
end
return {to_dead, requeued, orphaned, pruned}
