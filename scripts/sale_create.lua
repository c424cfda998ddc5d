-- Creates a sale unless one with the same id exists, and records the creation
-- on the partition's settlement stream in the same atomic step.
--
-- A create sent again (a client retry, or go-redis resending after a lost
-- reply) with the same terms finds its own sale: it succeeds without a
-- second event. Different terms under a taken id are refused.
--
-- KEYS[1] sale hash   KEYS[2] events stream   KEYS[3] partition epoch marker
-- ARGV    id, merchant_id, price_cents, stock, per_user_limit, starts_at_ms, ends_at_ms
-- Returns 1 when created, 2 when the same sale exists already, 0 when the id
-- is taken by other terms.
-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; decide nothing until it is back.
-- The marker holds the partition's epoch, which the stream entry carries
-- ("ep"): the settler refuses an entry a later rebuild has left behind.
local ep = redis.call('GET', KEYS[3])
if not ep then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
local cur = redis.call('HMGET', KEYS[1], 'mch', 'price', 'init', 'limit', 'start', 'end')
if cur[1] then
  for i = 1, 6 do
    if cur[i] ~= ARGV[i + 1] then
      return 0
    end
  end
  return 2
end
redis.call('HSET', KEYS[1],
  'mch', ARGV[2], 'price', ARGV[3], 'stock', ARGV[4], 'init', ARGV[4], 'sold', 0,
  'limit', ARGV[5], 'start', ARGV[6], 'end', ARGV[7])
redis.call('XADD', KEYS[2], '*', 'k', 'sale', 'id', ARGV[1], 'mch', ARGV[2],
  'price', ARGV[3], 'stock', ARGV[4], 'limit', ARGV[5], 'start', ARGV[6], 'end', ARGV[7], 'ep', ep)
return 1
