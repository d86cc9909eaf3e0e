--[[ flow_shared: helpers of the flow transitions (prepended after shared.lua to every
  flow_* script at load time; this file is not a transition and is never run alone).

  A flow node's key group (FLOW_GROUP + L keys; L, the lanes per partition, comes in ARGV,
  and the lanes come last so their number may change):
    +1 events STREAM   +2 delayed ZSET   +3 delayed data HASH   +4 control STREAM
    +5 stats HASH      +6 moves HASH     +7 dead STREAM
    +8 index bucket of the job HASH      +9 record of the job STRING
    +10 flow hash of the job HASH (a job with children)
    +11 lane map STRING (lua/shared.lua)
    +12 .. +11+L lanes, by lane number STREAM
  A parent's flow hash: st (w: waiting for its children, r: released to its lane,
  d: done, f: failed, x: cancelled), pend (children not finished), n, pol (fail |
  continue); while it waits its entry: d payload, a max attempts, t created ms, y type,
  l lane, b spec, dl delay ms; up (its own parent, 'queue/partition/id', or ''), kids
  ('queue/partition/c-or-dash/id' lines), qcfg ('queue/failed ttl ms/events max/dead
  max' lines of its children's queues), cfg (the same three figures of its own queue);
  r:<child id> the outcome of each finished child: 'n|' completed without result,
  'r|<bytes>' its result, 'x|<reason>' completed but its result was dropped,
  'f|<error>' failed for good, 'k|<reason>' cancelled.
  A tree (failure and cancel transitions) is M nodes in ARGV, FLOW_NODE values each:
  job_id, parent index (0: none), 1 if it has children, failed ttl ms (0: keep no
  record; a flow hash then goes when its job finishes), events max, dead max; node i's key group starts at KEYS[(i - 1) * (FLOW_GROUP + L) + 1].
]]
local FLOW_GROUP = 11
local FLOW_NODE = 6
local FLOW_REASON_MAX = 500

local function flow_group(base, L)
  local g = {events = KEYS[base + 1], delayed = KEYS[base + 2], ddata = KEYS[base + 3],
    control = KEYS[base + 4], stats = KEYS[base + 5], moves = KEYS[base + 6],
    dead = KEYS[base + 7], bucket = KEYS[base + 8], rec = KEYS[base + 9],
    flow = KEYS[base + 10], map = KEYS[base + 11], lanes = {}}
  for i = 1, L do g.lanes[i] = KEYS[base + FLOW_GROUP + i] end
  return g
end

-- The tree of a failure or cancel transition, from ARGV[at] = M onwards.
local function flow_tree(at, L)
  local t = {id = {}, parent = {}, haskids = {}, fttl = {}, evmax = {}, deadmax = {},
    kids = {}, g = {}, m = tonumber(ARGV[at])}
  for i = 1, t.m do
    local b = at + (i - 1) * FLOW_NODE
    t.id[i] = ARGV[b + 1]
    t.parent[i] = tonumber(ARGV[b + 2])
    t.haskids[i] = ARGV[b + 3] == '1'
    t.fttl[i] = tonumber(ARGV[b + 4])
    t.evmax[i] = tonumber(ARGV[b + 5])
    t.deadmax[i] = tonumber(ARGV[b + 6])
    t.kids[i] = {}
    t.g[i] = flow_group((i - 1) * (FLOW_GROUP + L), L)
  end
  for i = 1, t.m do
    if t.parent[i] > 0 then
      local k = t.kids[t.parent[i]]
      k[#k + 1] = i
    end
  end
  return t
end

local function flow_event(key, evmax, name, job_id, jtype, attempt, err)
  if evmax and tonumber(evmax) > 0 then
    if err then
      redis.call('XADD', key, 'MAXLEN', '~', evmax, '*', 'ev', name, 'j', job_id,
        'y', jtype or '', 'a', attempt or 0, 'e', err)
    else
      redis.call('XADD', key, 'MAXLEN', '~', evmax, '*', 'ev', name, 'j', job_id,
        'y', jtype or '', 'a', attempt or 0)
    end
  end
end

local function flow_cfg(g)
  local cfg = redis.call('HGET', g.flow, 'cfg') or ''
  local fttl, evmax, deadmax = string.match(cfg, '^(%d+)/(%d+)/(%d+)$')
  return tonumber(fttl) or 604800000, tonumber(evmax) or 0, tonumber(deadmax) or 100000
end

-- A parent whose children all finished goes to its lane (or, with a delay, to the
-- delayed set), its payload leaving the flow hash; its children's outcomes stay.
local function flow_release(g, job_id, now)
  local f = redis.call('HMGET', g.flow, 'd', 'a', 't', 'y', 'l', 'b', 'dl')
  local payload, attempts, created, jtype = f[1] or '', f[2] or '1', tonumber(f[3]) or now,
    f[4] or ''
  local lane, spec, delay = tonumber(f[5]) or 0, f[6] or '', tonumber(f[7]) or 0
  local _, evmax = flow_cfg(g)
  if delay > 0 then
    local due = now + delay
    local first = redis.call('ZRANGE', g.delayed, 0, 0, 'WITHSCORES')
    redis.call('ZADD', g.delayed, due, job_id)
    redis.call('HSET', g.ddata, job_id,
      cmsgpack.pack({job_id, payload, attempts, 0, 0, created, spec, lane, '', jtype}))
    redis.call('HSET', g.bucket, job_id, 'd')
    if not first[2] or due < tonumber(first[2]) then
      redis.call('XADD', g.control, 'MAXLEN', '~', 64, '*', 'due', due)
    end
  else
    local id = redis.call('XADD', g.lanes[lane + 1], '*', 'j', job_id, 'd', payload,
      'm', attempts .. '|0|0|' .. math.max(0, now - created) .. '|' .. spec .. '|' .. jtype)
    mark_lane(g.map, lane)
    redis.call('HSET', g.bucket, job_id, lane .. ':' .. id)
  end
  redis.call('HSET', g.flow, 'st', 'r')
  redis.call('HDEL', g.flow, 'd')
  flow_event(g.events, evmax, 'children_done', job_id, jtype, 1)
end

-- Record a child's outcome with its parent, once per child: HSETNX on r:<child id> is
-- what makes a retried or replayed child unable to count twice. Returns true when this
-- call recorded it while the parent still waits (the caller then counts it down).
local function flow_record_outcome(pg, child_id, outcome)
  if redis.call('EXISTS', pg.flow) == 0 then
    return false  -- the parent's flow is gone (expired): nothing waits for this child
  end
  if redis.call('HSETNX', pg.flow, 'r:' .. child_id, outcome) == 0 then
    return false
  end
  return redis.call('HGET', pg.flow, 'st') == 'w'
end

-- A child completed: count it down at its parent, releasing the parent on the last one.
local function flow_child_done(pg, parent_id, child_id, outcome, now)
  if flow_record_outcome(pg, child_id, outcome) then
    if redis.call('HINCRBY', pg.flow, 'pend', -1) <= 0 then
      flow_release(pg, parent_id, now)
    end
  end
end

local function flow_cancelled_record(g, rec_ttl, job_id, made, attempts, created, jtype, now,
                                     evmax)
  if rec_ttl > 0 then
    redis.call('SET', g.rec, 'cancelled|' .. made .. '|' .. attempts .. '|' .. created .. '|' ..
      now .. '|' .. jtype .. '||', 'PX', rec_ttl)
  end
  redis.call('HINCRBY', g.stats, 'cancelled', 1)
  flow_event(g.events, evmax, 'cancelled', job_id, jtype, made)
end

-- Cancel node i if it has not started (waiting, delayed, or waiting for its own
-- children, whose not-started subtree goes too). A running node is left to finish.
-- Returns 1 cancelled, 0 already finished or unknown, -1 running.
local flow_cancel_node
flow_cancel_node = function(t, i, now, group)
  local g, job_id = t.g[i], t.id[i]
  local loc = redis.call('HGET', g.moves, job_id) or redis.call('HGET', g.bucket, job_id)
  if not loc then
    return 0
  end
  local attempts, created, made, jtype = '', '', 0, ''
  if loc == 'c' then
    local f = redis.call('HMGET', g.flow, 'a', 't', 'y')
    attempts, created, jtype = f[1] or '', f[2] or '', f[3] or ''
    for _, k in ipairs(t.kids[i]) do
      flow_cancel_node(t, k, now, group)
    end
  elseif loc == 'd' then
    local packed = redis.call('HGET', g.ddata, job_id)
    if packed then
      local e = cmsgpack.unpack(packed)
      attempts, made, created, jtype = e[3], e[4], e[6], e[10] or ''
    end
    redis.call('ZREM', g.delayed, job_id)
    redis.call('HDEL', g.ddata, job_id)
  else
    local lane_key, id = g.lanes[tonumber(string.match(loc, '^(%d+):')) + 1],
      string.match(loc, ':(.+)$')
    local p = redis.pcall('XPENDING', lane_key, group, id, id, 1)
    if not p.err and p[1] then
      return -1
    end
    local r = redis.call('XRANGE', lane_key, id, id)
    if r[1] then
      local f = fields_of(r[1][2])
      attempts, made, jtype = f['a'] or '', f['n'] or 0, f['y'] or ''
      created = tonumber(string.match(id, '^(%d+)')) - (tonumber(f['t']) or 0)
    end
    redis.call('XDEL', lane_key, id)
  end
  redis.call('HDEL', g.bucket, job_id)
  redis.call('HDEL', g.moves, job_id)
  if t.haskids[i] and redis.call('EXISTS', g.flow) == 1 then
    redis.call('HSET', g.flow, 'st', 'x')
    redis.call('HDEL', g.flow, 'd')
    redis.call('PEXPIRE', g.flow, t.fttl[i])
  end
  flow_cancelled_record(g, t.fttl[i], job_id, made, attempts, created, jtype, now, t.evmax[i])
  return 1
end

-- A parent still waiting for its children fails for good (a child failed under policy
-- "fail"): dead-lettered from its flow hash, with the reason.
local function flow_fail_waiting(t, i, reason, now)
  local g, job_id = t.g[i], t.id[i]
  local f = redis.call('HMGET', g.flow, 'd', 'a', 't', 'y', 'l', 'b')
  local attempts, created, jtype = f[2] or '1', f[3] or '0', f[4] or ''
  local dead_id = redis.call('XADD', g.dead, 'MAXLEN', '~', t.deadmax[i], '*',
    'j', job_id, 'd', f[1] or '', 'a', attempts, 'n', 0, 's', 0, 't', created, 'b', f[6] or '',
    'y', jtype, 'l', f[5] or '1', 'e', reason, 'f', now)
  if t.fttl[i] > 0 then
    redis.call('SET', g.rec, 'failed|0|' .. attempts .. '|' .. created .. '|' .. now .. '|' ..
      jtype .. '|' .. dead_id .. '|' .. reason, 'PX', t.fttl[i])
  end
  redis.call('HINCRBY', g.stats, 'failed', 1)
  redis.call('HDEL', g.bucket, job_id)
  redis.call('HDEL', g.moves, job_id)
  redis.call('HSET', g.flow, 'st', 'f')
  redis.call('HDEL', g.flow, 'd')
  redis.call('PEXPIRE', g.flow, t.fttl[i])
  flow_event(g.events, t.evmax[i], 'dead', job_id, jtype, 0, reason)
end

-- Node i finished for good without success (failed, or cancelled): tell its parent,
-- and, under policy "fail", the parent fails too (its not-started children are
-- cancelled) and the news climbs on to its own parent.
local function flow_settle_failure(t, i, outcome, what, now, group)
  local pi = t.parent[i]
  while pi > 0 do
    local pg = t.g[pi]
    if not flow_record_outcome(pg, t.id[i], outcome) then
      return
    end
    if redis.call('HGET', pg.flow, 'pol') == 'continue' then
      if redis.call('HINCRBY', pg.flow, 'pend', -1) <= 0 then
        flow_release(pg, t.id[pi], now)
      end
      return
    end
    local reason = string.sub('child ' .. t.id[i] .. ' ' .. what, 1, FLOW_REASON_MAX)
    flow_fail_waiting(t, pi, reason, now)
    for _, k in ipairs(t.kids[pi]) do
      if k ~= i then
        flow_cancel_node(t, k, now, group)
      end
    end
    outcome = 'f|' .. reason
    what = 'failed: ' .. reason
    i, pi = pi, t.parent[pi]
  end
end
