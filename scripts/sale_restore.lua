-- Restores one sale's keys from MySQL after Redis lost them (a rebuild,
-- engine/rebuild.go). Each key is written only when it is absent: a key
-- that survived is at least as new as MySQL (the rebuild settled the
-- partition's stream first, and the partition is fenced meanwhile), so it
-- is kept.
--
-- KEYS[1] sale hash   KEYS[2] buyers hash
-- ARGV    merchant_id, price_cents, stock (left), initial stock, sold,
--         per_user_limit, starts_at_ms, ends_at_ms, n, then n more
--         field/value pairs of the sale hash (a shard's layout and moves:
--         tot, shards, parts, tin, tout), then field/value pairs of the
--         buyers hash
-- Returns two flags: sale hash written, buyers hash written.
local out = {0, 0}
local first = 10 + 2 * tonumber(ARGV[9]) -- the buyers' first pair
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'mch', ARGV[1], 'price', ARGV[2], 'stock', ARGV[3], 'init', ARGV[4],
    'sold', ARGV[5], 'limit', ARGV[6], 'start', ARGV[7], 'end', ARGV[8])
  for i = 10, first - 1, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  out[1] = 1
end
if #ARGV >= first and redis.call('EXISTS', KEYS[2]) == 0 then
  -- One HSET per pair: unpacking a large table would overflow Lua's stack.
  for i = first, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  out[2] = 1
end
return out
