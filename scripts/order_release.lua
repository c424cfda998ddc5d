-- Returns a cancelled order's stock to its sale and frees the buyer's limit,
-- so the buyer may grab again. Runs at most once per order: the record gets
-- a "|rel" suffix.
--
-- The record may be gone (past its retention, or Redis lost it) while MySQL
-- still holds the order: then the caller's facts (user, qty) say what to
-- return, and a tombstone ("~rel", kept as long as a record) stands in for
-- the record so that a second call returns nothing more.
--
-- KEYS[1] sale hash   KEYS[2] buyers hash
-- KEYS[3] the order's bucket (Keyspace.Orders): a hash whose field ARGV[3]
--   is the order record ("sale|user|merchant|qty|amount|at_ms|key", see
--   sale_grab.lua)
-- KEYS[4] partition epoch marker (the fence below)
-- ARGV[1] user, ARGV[2] qty, ARGV[3] order id, ARGV[4] tombstone retention ms
-- Returns 1 when released now, 0 when it was released before, -1 when the
-- record is gone and the facts are missing, -2 when the sale's keys are gone
-- (nothing can be returned).
-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; decide nothing until it is back.
if redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
local rec = redis.call('HGET', KEYS[3], ARGV[3])
if rec == '~rel' then
  return 0
end
local user, qty, key
if rec then
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
  user, qty, key = f[2], tonumber(f[4]), f[7]
else
  user, qty = ARGV[1], tonumber(ARGV[2])
  if user == '' or not qty or qty < 1 then
    return -1
  end
end
-- HINCRBY on a missing sale would make up a sale of qty units.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -2
end
redis.call('HINCRBY', KEYS[1], 'stock', qty)
redis.call('HINCRBY', KEYS[1], 'sold', -qty)
redis.call('HINCRBY', KEYS[2], 'u:' .. user, -qty)
if key then
  redis.call('HDEL', KEYS[2], 'k:' .. user .. ':' .. key)
  -- The bucket keeps its expiry.
  redis.call('HSET', KEYS[3], ARGV[3], rec .. '|rel')
  return 1
end
-- The attempt's key went with the record: find the user's attempt field
-- that names this order ("order_id|qty|amount"). User ids are
-- [A-Za-z0-9_-], no glob characters. A rare path: it walks the buyers hash.
local mark, cursor = ARGV[3] .. '|', '0'
repeat
  local r = redis.call('HSCAN', KEYS[2], cursor, 'MATCH', 'k:' .. user .. ':*', 'COUNT', 1000)
  cursor = r[1]
  for i = 1, #r[2], 2 do
    if string.sub(r[2][i + 1], 1, #mark) == mark then
      redis.call('HDEL', KEYS[2], r[2][i])
    end
  end
until cursor == '0'
-- The bucket is kept at least as long as the tombstone: NX when the
-- tombstone made it (its records all expired), GT when it lives shorter.
redis.call('HSET', KEYS[3], ARGV[3], '~rel')
redis.call('PEXPIRE', KEYS[3], ARGV[4], 'NX')
redis.call('PEXPIRE', KEYS[3], ARGV[4], 'GT')
return 1
