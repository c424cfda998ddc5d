-- Decides the grabs of one red packet for a batch of users, in order,
-- atomically: dedupes each user, computes the share, updates the remainder and
-- appends the settlement event to the partition stream.
--
-- Random shares use the double-mean method: uniform in
-- [1, 2*remaining/remaining_count - 1], the last grabber takes what is left.
-- So every share is at least 1 fen, the shares sum to the total, and the
-- expected share does not depend on the grab position. Randomness comes from
-- the caller (ARGV): Redis resets Lua's math.random for every call.
--
-- KEYS[1] packet hash   KEYS[2] grabs hash   KEYS[3] events stream   KEYS[4] expiry zset
-- KEYS[5] partition epoch marker (the fence below)
-- ARGV[1] packet id, ARGV[2] retention ms of an emptied packet's keys, then
-- per user i: user, random integer in [0, 2^40)
-- Returns, per user, four integers: outcome, amount, remaining count,
-- remaining cents. Outcomes: 0 ok, 1 repeat, 2 empty, 3 expired, 4
-- not_found (engine/packet.go). Integers only, so that the caller decodes
-- the reply without a string per user.
--
-- As in sale_grab.lua, the batch reads its users' grabs in one HMGET, writes
-- the new ones in one HSET and appends one stream entry for all its wins:
-- k "grabs", pkt, sender, at (Unix ms), and g, the shares joined by ',',
-- each "user|amount|seq". engine.ParseEntry reads it.
-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; decide nothing until it is back.
-- The marker holds the partition's epoch, which the stream entry carries
-- ("ep"): the settler refuses an entry a later rebuild has left behind.
local ep = redis.call('GET', KEYS[5])
if not ep then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end
local pkt = redis.call('HMGET', KEYS[1], 'sender', 'count', 'mode', 'rem', 'left', 'exp', 'st')
local n = (#ARGV - 2) / 2
local out = {}
if not pkt[1] then
  for j = 1, 4 * n, 4 do
    out[j] = 4; out[j + 1] = 0; out[j + 2] = 0; out[j + 3] = 0
  end
  return out
end
local sender, count, mode = pkt[1], tonumber(pkt[2]), pkt[3]
local rem, left, exp, st = tonumber(pkt[4]), tonumber(pkt[5]), tonumber(pkt[6]), pkt[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Every grab record of this call is amount .. tail .. seq (13-digit ms:
-- Lua writes it whole).
local tail = '|' .. now .. '|'
local changed = false

local users = {}
for i = 1, n do users[i] = ARGV[2 * i + 1] end
local read = redis.call('HMGET', KEYS[2], unpack(users))
-- nw, ns: lengths of writes and shares.
local wrote, writes, shares, nw, ns = {}, {}, {}, 0, 0

for i = 1, n do
  local user, r = users[i], tonumber(ARGV[2 * i + 2])
  local outcome, amount = 0, 0
  local prev = wrote[user] or read[i]
  if prev then
    -- prev is "amount|at_ms|seq"
    outcome = 1
    amount = tonumber(string.sub(prev, 1, string.find(prev, '|', 1, true) - 1))
  elseif st ~= 'open' or now >= exp then
    outcome = 3
  elseif left < 1 then
    outcome = 2
  else
    if left == 1 then
      amount = rem
    elseif mode == 'fixed' then
      amount = rem / left
    else
      local hi = math.floor(2 * rem / left) - 1
      if hi < 1 then hi = 1 end
      amount = 1 + r % hi
    end
    rem = rem - amount
    left = left - 1
    changed = true
    local seq = count - left
    local amounts, seqs = tostring(amount), tostring(seq)
    local rec = amounts .. tail .. seqs
    wrote[user] = rec
    writes[nw + 1] = user; writes[nw + 2] = rec
    nw = nw + 2
    ns = ns + 1
    shares[ns] = user .. '|' .. amounts .. '|' .. seqs
  end
  local j = 4 * i - 3
  out[j] = outcome; out[j + 1] = amount; out[j + 2] = left; out[j + 3] = rem
end
if changed then
  redis.call('HSET', KEYS[2], unpack(writes, 1, nw))
  redis.call('XADD', KEYS[3], '*', 'k', 'grabs', 'pkt', ARGV[1], 'sender', sender, 'at', now,
    'g', table.concat(shares, ','), 'ep', ep)
  redis.call('HSET', KEYS[1], 'rem', rem, 'left', left)
  if left == 0 then
    -- Emptied: nothing will be refunded; MySQL keeps the packet for good.
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return out
