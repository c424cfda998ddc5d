-- Restores one sale's keys from MySQL after Redis lost them (a rebuild,
-- engine/rebuild.go). Each key is written only when it is absent: a key
-- that survived is at least as new as MySQL (the rebuild settled the
-- partition's stream first, and the partition is fenced meanwhile), so it
-- is kept.
--
-- The buyers hash arrives already built, in a staging key the rebuild
-- filled with plain HSETs of bounded size beforehand: a sale with a million
-- buyers must not hold Redis inside one call while its millions of
-- arguments are written. It becomes the buyers hash by RENAME, in O(1).
--
-- KEYS[1] sale hash   KEYS[2] buyers hash   KEYS[3] staged buyers hash
-- ARGV    merchant_id, price_cents, stock (left), initial stock, sold,
--         per_user_limit, starts_at_ms, ends_at_ms, n, then n more
--         field/value pairs of the sale hash (a shard's layout and moves:
--         tot, shards, parts, tin, tout)
-- Returns two flags: sale hash written, buyers hash written.
local out = {0, 0}
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'mch', ARGV[1], 'price', ARGV[2], 'stock', ARGV[3], 'init', ARGV[4],
    'sold', ARGV[5], 'limit', ARGV[6], 'start', ARGV[7], 'end', ARGV[8])
  for i = 10, 9 + 2 * tonumber(ARGV[9]), 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  out[1] = 1
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    redis.call('RENAME', KEYS[3], KEYS[2])
    out[2] = 1
  else
    redis.call('DEL', KEYS[3])
  end
end
return out
