-- Second step of moving stock between two shards of a sale (see
-- sale_take.lua): adds a transfer's units to the destination shard, once per
-- transfer id however often it is sent (the mover and any recovery may both
-- send it). The source's transit entry is removed after this succeeds.
--
-- KEYS[1] destination shard's sale hash   KEYS[2] its applied hash
--   (transfer id → units)
-- ARGV[1] transfer id, ARGV[2] units
-- Returns 1 when applied now, 0 when applied before, -2 when the shard is
-- gone (nothing applied; the units stay in transit).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -2
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'tin', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
