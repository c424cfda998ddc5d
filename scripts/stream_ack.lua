-- Acknowledges settled entries of a partition stream and trims the stream's
-- settled history in one step, instead of one XDEL per entry (which cost
-- Redis about as much as the grab that made the entry).
--
-- What may go: every entry older than the oldest one some consumer group
-- still needs, that is, per group, its oldest pending entry (read but not
-- acknowledged, whichever consumer holds it: a dead settler's entries stay
-- for XAUTOCLAIM) or, with none pending, the first entry after its
-- last-delivered id (not yet read). Entries are only ever added above that
-- bound and only leave the pending lists, so the bound computed here can
-- only be too low, never too high.
--
-- KEYS[1] stream   ARGV[1] group, ARGV[2..] ids to acknowledge
-- Returns the number of entries acknowledged.
local acked = 0
if #ARGV > 1 then
  acked = redis.call('XACK', KEYS[1], unpack(ARGV))
end
-- A stream Redis lost (with its groups and pending lists) has nothing left
-- to acknowledge or trim; XINFO would fail on it.
if acked == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end

-- An id as two numbers; sequences stay far below 2^53.
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local bms, bseq -- the lowest bound over all groups
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  local ms, seq
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 then
    ms, seq = parse(pending[2])
  else
    ms, seq = parse(delivered)
    seq = seq + 1
  end
  if not bms or ms < bms or (ms == bms and seq < bseq) then
    bms, bseq = ms, seq
  end
end
if bms then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', bms, bseq))
end
return acked
