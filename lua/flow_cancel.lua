#!lua flags=allow-oom
--[[ flow_cancel: cancel one job of a flow that has not started (waiting, delayed, or a
  parent waiting for its children: its children that have not started are cancelled
  too, running ones finish), then settle its flow like a failure ("was cancelled"): its
  parent's policy "continue" counts it as finished, "fail" fails the parent (and
  cancels the parent's children that have not started). allow-oom: it frees data.

  KEYS[1 ..] the key groups of the flow's tree (lua/flow_shared.lua), node i's starting
    at KEYS[(i - 1) * (11 + L) + 1]
  ARGV[1] L (lanes per partition)   ARGV[2] group   ARGV[3] the job's node index
  ARGV[4] M, then the tree's nodes (lua/flow_shared.lua)
  Returns: 1 cancelled; 0 unknown or finished already; -1 running (not cancelled).
]]
local L = tonumber(ARGV[1])
local group = ARGV[2]
local me = tonumber(ARGV[3])
local t = flow_tree(4, L)
local now = now_ms()
local r = flow_cancel_node(t, me, now, group)
if r ~= 1 then
  return r
end
flow_settle_failure(t, me, 'k|cancelled', 'was cancelled', now, group)
return 1
