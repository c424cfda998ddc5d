-- Restores one live red packet from MySQL after Redis lost it (a rebuild,
-- engine/rebuild.go): its terms, what is left, who grabbed, and its place
-- in the expiry set. A packet whose hash survived is kept as it is.
--
-- KEYS[1] packet hash   KEYS[2] grabs hash   KEYS[3] partition expiry zset
-- ARGV    id, sender, total_cents, count, mode, rem (fen left), left
--         (shares left), expires_at_ms, created_at_ms, retention ms of an
--         emptied packet's keys, then user/record pairs of the grabs hash
--         ("amount|at_ms|seq", as packet_grab.lua writes them)
-- Returns 1 when restored, 0 when the packet was there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'sender', ARGV[2], 'total', ARGV[3], 'count', ARGV[4], 'mode', ARGV[5],
  'rem', ARGV[6], 'left', ARGV[7], 'exp', ARGV[8], 'at', ARGV[9], 'st', 'open')
redis.call('DEL', KEYS[2])
for i = 11, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if tonumber(ARGV[7]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
else
  -- Emptied: kept for its retention, as packet_grab.lua does.
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
  if #ARGV > 10 then
    redis.call('PEXPIRE', KEYS[2], ARGV[10])
  end
end
return 1
