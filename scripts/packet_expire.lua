-- Closes an expired red packet and appends the refund of its remainder to the
-- sender, exactly once however many sweepers race to do it.
--
-- KEYS[1] packet hash   KEYS[2] expiry zset   KEYS[3] events stream
-- KEYS[4] grabs hash   KEYS[5] partition epoch marker (the fence below)
-- ARGV[1] packet id, ARGV[2] how long (ms) the closed packet's keys are kept
-- Returns the refunded cents (0 when nothing was left), -1 when the packet is
-- not due yet, -2 when it was closed before or does not exist.

-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; a refund now could be counted
-- again by the rebuild. The marker's epoch goes into the refund's entry.
local ep = redis.call('GET', KEYS[5])
if not ep then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
local pkt = redis.call('HMGET', KEYS[1], 'sender', 'rem', 'left', 'exp', 'st')
if not pkt[1] or pkt[5] ~= 'open' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -2
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(pkt[4]) then
  return -1
end
local rem = tonumber(pkt[2])
if tonumber(pkt[3]) == 0 then
  rem = 0
end
redis.call('HSET', KEYS[1], 'st', 'expired', 'refund', rem)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
if rem > 0 then
  redis.call('XADD', KEYS[3], '*', 'k', 'refund', 'pkt', ARGV[1], 'sender', pkt[1], 'amt', rem, 'at', now, 'ep', ep)
end
return rem
