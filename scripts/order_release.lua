-- Returns a cancelled order's stock to its sale and frees the buyer's limit,
-- so the buyer may grab again. Runs at most once per order.
--
-- KEYS[1] sale hash   KEYS[2] buyers hash   KEYS[3] order hash
-- Returns 1 when released now, 0 when it was released before, -1 when the
-- order is unknown.
local o = redis.call('HMGET', KEYS[3], 'user', 'qty', 'key', 'rel')
if not o[1] then
  return -1
end
if o[4] then
  return 0
end
local qty = tonumber(o[2])
redis.call('HINCRBY', KEYS[1], 'stock', qty)
redis.call('HINCRBY', KEYS[1], 'sold', -qty)
redis.call('HINCRBY', KEYS[2], 'u:' .. o[1], -qty)
redis.call('HDEL', KEYS[2], 'k:' .. o[1] .. ':' .. o[3])
redis.call('HSET', KEYS[3], 'rel', 1)
return 1
