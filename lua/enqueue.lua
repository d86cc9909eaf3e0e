#!lua
--[[ enqueue: add N jobs to a queue, each either to its priority lane or to the delayed set.
  A job whose id is already live (in its index bucket) is not added again: a retried or
  duplicate add returns the existing job. Due times use the Redis clock.
  Not allow-oom: under maxmemory the add is refused (the caller raises QueueFull).

  KEYS[1..10] lanes, by lane number   STREAM (lua/shared.lua: LANE_ORDER)
  KEYS[11] lane map     STRING bitmap of lanes with unread entries
  KEYS[12] events         STREAM (capped at ARGV[2]; 0 = no events): one 'added' entry per
                         100 jobs, j/y/a holding space-separated job ids, types, attempts
  KEYS[13] delayed        ZSET   job_id scored by due ms
  KEYS[14] delayed data   HASH   job_id -> cmsgpack entry
  KEYS[15] control        STREAM wakes idle workers (capped)
  KEYS[15 + i] index bucket of the i-th job   HASH job_id -> location at add time
  ARGV[1] number of jobs N   ARGV[2] events max length
  then per job, 7 values:
    job_id, payload (bytes), lane number (0-9, lua/shared.lua), attempts (max),
    delay (ms, 0 = now), backoff spec (opaque here: 'base_ms:cap_ms:j:timeout_ms', trailing
    parts optional, so it carries the job's own timeout), type (for events; may be '')
  Optional blind index (only when ARGV holds more than the 2 + 7N values above):
    ARGV[3 + 7N] horizon (ms): how long an index entry outlives its job's due time
    ARGV[4 + 7N + i] number k_i of index sets of the i-th job (i from 0)
    KEYS[16 + N ...] the index sets of job 0, then of job 1, ...   ZSET job_id scored by
      expiry (ms). For an added job: entries past their expiry are pruned, the job is
      added scored now + delay + horizon, and the set's TTL is raised to cover it.
  Lane entries hold, in this order: j job_id, d payload, m 'attempts|failed attempts|
  stalls|ms between creation and this entry's id|backoff|type' [, e last error]: few
  fields, because every field is a string to convert when a script reads the entry.
  Returns: array of N integers, 1 = added, 0 = already live (deduplicated).
]]
local map, events, delayed, ddata, control = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local now = now_ms()
local n, evmax = tonumber(ARGV[1]), ARGV[2]
local out = {}
local ev_ids, ev_types, ev_att = {}, {}, {}
local earliest = nil
local ix_base = 3 + n * 7
local horizon = tonumber(ARGV[ix_base])
local ix_next = 16 + n
local marked = {}
for i = 0, n - 1 do
  local base = 3 + i * 7
  local bucket = KEYS[16 + i]
  local job_id, payload, lane = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local attempts, delay, backoff = ARGV[base + 3], tonumber(ARGV[base + 4]), ARGV[base + 5]
  local jtype = ARGV[base + 6]
  if redis.call('HEXISTS', bucket, job_id) == 1 then
    out[#out + 1] = 0
  else
    if delay > 0 then
      local due = now + delay
      if earliest == nil then
        local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
        earliest = first[2] and tonumber(first[2]) or math.huge
      end
      redis.call('ZADD', delayed, due, job_id)
      redis.call('HSET', ddata, job_id,
        cmsgpack.pack({job_id, payload, attempts, 0, 0, now, backoff, lane, '', jtype}))
      redis.call('HSET', bucket, job_id, 'd')
      if due < earliest then
        -- an idle worker may be sleeping until a later due time: wake it
        earliest = due
        redis.call('XADD', control, 'MAXLEN', '~', 64, '*', 'due', due)
      end
    else
      local id = redis.call('XADD', KEYS[1 + lane], '*', 'j', job_id, 'd', payload,
        'm', attempts .. '|0|0|0|' .. backoff .. '|' .. jtype)
      redis.call('HSET', bucket, job_id, lane .. ':' .. id)
      if not marked[lane] then
        marked[lane] = true
        mark_lane(map, lane)
      end
    end
    if horizon then
      local expires = delay + horizon
      for x = ix_next, ix_next + tonumber(ARGV[ix_base + 1 + i]) - 1 do
        redis.call('ZREMRANGEBYSCORE', KEYS[x], '-inf', now)
        redis.call('ZADD', KEYS[x], now + expires, job_id)
        if redis.call('PTTL', KEYS[x]) < expires then
          redis.call('PEXPIRE', KEYS[x], expires)
        end
      end
    end
    ev_ids[#ev_ids + 1] = job_id
    ev_types[#ev_types + 1] = jtype
    ev_att[#ev_att + 1] = '1'
    out[#out + 1] = 1
  end
  if horizon then
    ix_next = ix_next + tonumber(ARGV[ix_base + 1 + i])
  end
end
if evmax ~= '0' then
  emit_batch(events, evmax, 'added', ev_ids, ev_types, ev_att)
end
return out
