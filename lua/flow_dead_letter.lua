#!lua flags=allow-oom
--[[ flow_dead_letter: fail one job of a flow for good, fenced by ownership, and in the
  same step settle its flow: the failure is recorded with its parent once
  (r:<child id>, HSETNX); under the parent's policy "continue" the parent's pending count
  goes down (the last child releases it); under "fail" the parent is dead-lettered with a
  reason naming the child, its children that have not started are cancelled, and the
  parent's own failure climbs to its parent the same way. What lua/dead_letter.lua does
  for a job happens here too. allow-oom: it frees the lane entry.

  KEYS[1 ..] the key groups of the flow's tree (lua/flow_shared.lua), node i's starting
    at KEYS[(i - 1) * (11 + L) + 1]
  ARGV[1] L (lanes per partition)   ARGV[2] group   ARGV[3] consumer   ARGV[4] lane
  ARGV[5] entry_id   ARGV[6] error (one line, already redacted)   ARGV[7] attempts made
  ARGV[8] 1 if a handler attempt failed (emit 'failed' first)   ARGV[9] the job's node index
  ARGV[10] M, then the tree's nodes (lua/flow_shared.lua)
  Returns: the dead-letter entry id; 0 if the claim was lost; -1 if the entry is gone.
]]
local L = tonumber(ARGV[1])
local group, consumer = ARGV[2], ARGV[3]
local id, err, made = ARGV[5], ARGV[6], ARGV[7]
local t = flow_tree(10, L)
local me = tonumber(ARGV[9])
local g, job_id = t.g[me], t.id[me]
local lane = g.lanes[tonumber(ARGV[4]) + 1]
local p = redis.call('XPENDING', lane, group, id, id, 1)
if not (p[1] and p[1][2] == consumer) then
  return 0
end
local r = redis.call('XRANGE', lane, id, id)
redis.call('XACK', lane, group, id)
redis.call('HDEL', g.bucket, job_id)
redis.call('HDEL', g.moves, job_id)
if not r[1] then
  return -1
end
local f = fields_of(r[1][2])
local now = now_ms()
local attempts = f['a'] or '1'
local created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
local jtype = f['y'] or ''
redis.call('XDEL', lane, id)
local dead_id = redis.call('XADD', g.dead, 'MAXLEN', '~', t.deadmax[me], '*',
  'j', job_id, 'd', f['d'] or '', 'a', attempts, 'n', made, 's', f['s'] or '0',
  't', created, 'b', f['b'] or '', 'y', jtype, 'l', ARGV[4], 'e', err, 'f', now)
if t.fttl[me] > 0 then
  redis.call('SET', g.rec, 'failed|' .. made .. '|' .. attempts .. '|' .. created .. '|' .. now ..
    '|' .. jtype .. '|' .. dead_id .. '|' .. err, 'PX', t.fttl[me])
end
redis.call('HINCRBY', g.stats, 'failed', 1)
if ARGV[8] == '1' then
  flow_event(g.events, t.evmax[me], 'failed', job_id, jtype, made, err)
end
flow_event(g.events, t.evmax[me], 'dead', job_id, jtype, made, err)
if t.haskids[me] and redis.call('EXISTS', g.flow) == 1 then
  redis.call('HSET', g.flow, 'st', 'f')
  redis.call('PEXPIRE', g.flow, t.fttl[me])
end
flow_settle_failure(t, me, 'f|' .. err, 'failed: ' .. err, now, group)
return dead_id
