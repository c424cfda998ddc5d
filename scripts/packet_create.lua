-- Makes a funded red packet grabbable, unless it already is: creating twice
-- (a republish after a crash) changes nothing.
--
-- KEYS[1] packet hash   KEYS[2] partition expiry zset   KEYS[3] partition epoch marker
-- ARGV    id, sender, total_cents, count, mode, expires_at_ms, created_at_ms
-- Returns 1 when created, 0 when it existed.
-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; decide nothing until it is back.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'sender', ARGV[2], 'total', ARGV[3], 'count', ARGV[4], 'mode', ARGV[5],
  'rem', ARGV[3], 'left', ARGV[4], 'exp', ARGV[6], 'at', ARGV[7], 'st', 'open')
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return 1
