-- Returns a cancelled order's stock to its sale and frees the buyer's limit,
-- so the buyer may grab again. Runs at most once per order: the record gets
-- a "|rel" suffix.
--
-- KEYS[1] sale hash   KEYS[2] buyers hash   KEYS[3] order record
--   ("sale|user|merchant|qty|amount|at_ms|key", see sale_grab.lua)
-- Returns 1 when released now, 0 when it was released before, -1 when the
-- order is unknown (or past its retention).
local rec = redis.call('GET', KEYS[3])
if not rec then
  return -1
end
-- Split on '|', keeping empty fields (the default attempt's key is "").
local f, from = {}, 1
while true do
  local at = string.find(rec, '|', from, true)
  if not at then
    f[#f + 1] = string.sub(rec, from)
    break
  end
  f[#f + 1] = string.sub(rec, from, at - 1)
  from = at + 1
end
if f[8] == 'rel' then
  return 0
end
local user, qty, key = f[2], tonumber(f[4]), f[7]
redis.call('HINCRBY', KEYS[1], 'stock', qty)
redis.call('HINCRBY', KEYS[1], 'sold', -qty)
redis.call('HINCRBY', KEYS[2], 'u:' .. user, -qty)
redis.call('HDEL', KEYS[2], 'k:' .. user .. ':' .. key)
redis.call('SET', KEYS[3], rec .. '|rel', 'KEEPTTL')
return 1
