#!lua
--[[ delivery_report: record a downstream's delivery report (an SMS gateway's callback) on
  a job, once per new status. A report is applied only when its status ranks higher than
  the one stored: a repeated callback (same status) and a late, earlier one (Buffered
  after Success) change nothing, so a gateway's retries and out-of-order deliveries are
  harmless. Ranks (set by the caller): in progress 1-3 (Sent < Submitted < Buffered),
  an unknown status 5, failed finals 10 (Rejected, Failed), success 11: a final status is
  never overwritten by a non-final one, a failure never by another failure, and Success
  (the handset has it) wins over a failure reported for another send of the same job.

  KEYS[1] delivery   HASH s status, r rank, n network code, f failure reason, c retry
                     count, t at (ms, Redis clock), m message id, p downstream; TTL ARGV[8]
  KEYS[2] events     STREAM (capped at ARGV[10]; 0 = no events): one 'delivery' entry per
                     applied report (j job id, status, provider, failure)
  ARGV[1] status   ARGV[2] its rank (integer)   ARGV[3] network code ('' none)
  ARGV[4] failure reason ('' none)   ARGV[5] retry count ('' none)   ARGV[6] message id
  ARGV[7] downstream name   ARGV[8] TTL (ms)   ARGV[9] job id   ARGV[10] events max length
  Returns: {1, status, status before ('' none)} when applied;
    {0, stored status} when not (a repeat, or not later than what is stored)
]]
local delivery, events = KEYS[1], KEYS[2]
local status, rank = ARGV[1], tonumber(ARGV[2])
local evmax = tonumber(ARGV[10])
local stored = redis.call('HMGET', delivery, 's', 'r')
local before, before_rank = stored[1], tonumber(stored[2])
if before and before_rank and rank <= before_rank then
  return {0, before}
end
local now = now_ms()
redis.call('HSET', delivery, 's', status, 'r', rank, 'n', ARGV[3], 'f', ARGV[4],
  'c', ARGV[5], 't', now, 'm', ARGV[6], 'p', ARGV[7])
redis.call('PEXPIRE', delivery, ARGV[8])
if evmax > 0 then
  local fields = {'ev', 'delivery', 'j', ARGV[9], 'status', status, 'provider', ARGV[7]}
  if ARGV[4] ~= '' then
    fields[#fields + 1] = 'failure'
    fields[#fields + 1] = ARGV[4]
  end
  redis.call('XADD', events, 'MAXLEN', '~', evmax, '*', unpack(fields))
end
return {1, status, before or ''}
