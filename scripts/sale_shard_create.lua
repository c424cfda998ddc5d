-- Creates one shard of a sale whose stock is spread over several partitions
-- (a sharded sale; see engine/shard.go), unless it exists. Every shard is a
-- sale hash of its own partition with the sale's terms, its share of the
-- stock, and the layout (shards, parts); sale_grab.lua runs on it unchanged.
-- Only shard 0 (the sale's own partition, created last) records the creation
-- on the stream, with the sale's total stock: a sale exists once shard 0 does.
--
-- KEYS[1] shard's sale hash   KEYS[2] events stream of the shard's partition
-- KEYS[3] the partition's epoch marker (the fence below)
-- ARGV    id, merchant_id, price_cents, shard stock, per_user_limit,
--         starts_at_ms, ends_at_ms, total stock, shards, parts ("3,7,12"),
--         emit (1: record the sale event)
-- Returns 1 when created, 2 when the same shard exists already (a retry), 0
-- when the id is taken by other terms. The partitions are not compared: a
-- retry finds the layout chosen the first time.
-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; create nothing until it is back.
-- The marker holds the partition's epoch, which the stream entry carries.
local ep = redis.call('GET', KEYS[3])
if not ep then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
local cur = redis.call('HMGET', KEYS[1], 'mch', 'price', 'init', 'limit', 'start', 'end', 'tot', 'shards')
if cur[1] then
  local want = {ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}
  for i = 1, 8 do
    if cur[i] ~= want[i] then
      return 0
    end
  end
  return 2
end
redis.call('HSET', KEYS[1],
  'mch', ARGV[2], 'price', ARGV[3], 'stock', ARGV[4], 'init', ARGV[4], 'sold', 0,
  'limit', ARGV[5], 'start', ARGV[6], 'end', ARGV[7],
  'tot', ARGV[8], 'shards', ARGV[9], 'parts', ARGV[10], 'tin', 0, 'tout', 0)
if ARGV[11] == '1' then
  redis.call('XADD', KEYS[2], '*', 'k', 'sale', 'id', ARGV[1], 'mch', ARGV[2],
    'price', ARGV[3], 'stock', ARGV[8], 'limit', ARGV[5], 'start', ARGV[6], 'end', ARGV[7],
    'shards', ARGV[9], 'parts', ARGV[10], 'ep', ep)
end
return 1
