#!lua
--[[ flow_add: add a whole flow (a tree of jobs: parents wait for their children) at once.
  Every id is checked before anything is written: when the root's id is live already,
  the flow was added before (a retried add_flow) and nothing is written; when another
  node's id is live, nothing is written either. Then each leaf goes to its lane (or the
  delayed set) like an enqueued job, and each parent waits in its flow hash (its index
  bucket says 'c') until its children have finished. Not allow-oom: it adds work.

  KEYS[1 ..] one key group per node (lua/flow_shared.lua: events, delayed, delayed data,
    control, stats, moves, dead, index bucket, record, flow hash, lane map, then the lanes), node i's
    starting at KEYS[(i - 1) * (11 + L) + 1]
  ARGV[1] L (lanes per partition)   ARGV[2] M (nodes, the root first, parents before their
    children)
  then per node 13 values: job_id, payload, lane number (lua/shared.lua), attempts, delay (ms),
    spec (backoff spec, then '/' and the flow link: lua/flow_shared.lua), type, parent
    index (0: the root), policy (fail | continue; '' for a leaf), kids ('' for a leaf),
    up (the parent as 'queue/partition/id', '' for the root), cfg ('failed ttl ms/events
    max/dead max' of the node's queue), qcfg (of its children's queues; '' for a leaf)
  Returns: {1} added; {0} the root's id is live (added before: nothing written);
    {-1, i} node i's id is live (nothing written).
]]
local L, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local VALUES = 13
local now = now_ms()
local nodes = {}
for i = 1, m do
  local b = 2 + (i - 1) * VALUES
  local g = flow_group((i - 1) * (FLOW_GROUP + L), L)
  nodes[i] = {g = g, id = ARGV[b + 1], payload = ARGV[b + 2], lane = tonumber(ARGV[b + 3]),
    attempts = ARGV[b + 4], delay = tonumber(ARGV[b + 5]), spec = ARGV[b + 6],
    jtype = ARGV[b + 7], parent = tonumber(ARGV[b + 8]), pol = ARGV[b + 9],
    kids = ARGV[b + 10], up = ARGV[b + 11], cfg = ARGV[b + 12], qcfg = ARGV[b + 13], n = 0}
  if redis.call('HEXISTS', g.bucket, nodes[i].id) == 1 then
    if i == 1 then
      return {0}
    end
    return {-1, i}
  end
end
for i = 2, m do
  local p = nodes[nodes[i].parent]
  p.n = p.n + 1
end
local added, order = {}, {}
local earliest = {}
for i = 1, m do
  local node, g = nodes[i], nodes[i].g
  if node.n > 0 then
    -- a leftover flow hash of a finished job with this id (kept for its TTL) is replaced
    redis.call('DEL', g.flow)
    redis.call('HSET', g.flow, 'st', 'w', 'pend', node.n, 'n', node.n, 'pol', node.pol,
      'd', node.payload, 'a', node.attempts, 't', now, 'y', node.jtype, 'l', node.lane,
      'b', node.spec, 'dl', node.delay, 'up', node.up, 'kids', node.kids, 'cfg', node.cfg,
      'qcfg', node.qcfg)
    redis.call('HSET', g.bucket, node.id, 'c')
  elseif node.delay > 0 then
    local due = now + node.delay
    if earliest[g.delayed] == nil then
      local first = redis.call('ZRANGE', g.delayed, 0, 0, 'WITHSCORES')
      earliest[g.delayed] = first[2] and tonumber(first[2]) or math.huge
    end
    redis.call('ZADD', g.delayed, due, node.id)
    redis.call('HSET', g.ddata, node.id, cmsgpack.pack({node.id, node.payload, node.attempts,
      0, 0, now, node.spec, node.lane, '', node.jtype}))
    redis.call('HSET', g.bucket, node.id, 'd')
    if due < earliest[g.delayed] then
      earliest[g.delayed] = due
      redis.call('XADD', g.control, 'MAXLEN', '~', 64, '*', 'due', due)
    end
  else
    local id = redis.call('XADD', g.lanes[node.lane + 1], '*', 'j', node.id, 'd', node.payload,
      'm', node.attempts .. '|0|0|0|' .. node.spec .. '|' .. node.jtype)
    mark_lane(g.map, node.lane)
    redis.call('HSET', g.bucket, node.id, node.lane .. ':' .. id)
  end
  local evmax = string.match(node.cfg, '^%d+/(%d+)/')
  if evmax and evmax ~= '0' then
    local batch = added[g.events]
    if batch == nil then
      batch = {evmax = evmax, ids = {}, types = {}, att = {}}
      added[g.events] = batch
      order[#order + 1] = g.events
    end
    batch.ids[#batch.ids + 1] = node.id
    batch.types[#batch.types + 1] = node.jtype
    batch.att[#batch.att + 1] = '1'
  end
end
for _, key in ipairs(order) do
  local batch = added[key]
  emit_batch(key, batch.evmax, 'added', batch.ids, batch.types, batch.att)
end
return {1}
