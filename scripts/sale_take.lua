-- First step of moving stock between two shards of a sale: takes units from
-- the source shard and records them in transit, atomically, so that stock
-- is never in neither place. sale_give.lua applies the transfer at the
-- destination; a transfer found in transit later (the mover died) is given
-- again, which is harmless (sale_give.lua applies each transfer once).
--
-- KEYS[1] source shard's sale hash   KEYS[2] its transit hash
--   (transfer id → "dst_partition|units|at_ms")
-- ARGV[1] transfer id, ARGV[2] destination partition, ARGV[3] units wanted
-- Takes max(wanted, half the stock, rounded up), at most the stock: a dry
-- shard asks again only after its share has sold.
-- Returns the units taken (0: nothing to take, or no such shard).
local stock = tonumber(redis.call('HGET', KEYS[1], 'stock'))
if not stock or stock < 1 then
  return 0
end
local n = math.max(tonumber(ARGV[3]), math.ceil(stock / 2))
if n > stock then
  n = stock
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HINCRBY', KEYS[1], 'stock', -n)
redis.call('HINCRBY', KEYS[1], 'tout', n)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. string.format('%d', n) .. '|' .. string.format('%d', now))
return n
