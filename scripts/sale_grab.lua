-- Decides the grabs of one sale for a batch of users, in order, atomically:
-- checks the sale window and each user's limit, decrements stock, records the
-- buyer and the order, and appends the batch's orders to the partition
-- stream as one entry. A win and its event cannot separate.
--
-- A user's grab is identified by (user, idempotency key): a retry with the same
-- pair returns the order it produced the first time, never a second one.
--
-- Redis's time goes per redis.call and per string built, and this runs for
-- every user, so the batch reads every user's buyer fields in one HMGET,
-- writes them in one HSET, and appends one stream entry (kind "orders") for
-- all its wins; only the order records are written per user (each its own
-- key with its own expiry).
--
-- KEYS[1] sale hash   KEYS[2] buyers hash   KEYS[3] events stream
-- KEYS[4] partition epoch marker (the fence below; its epoch goes into the entry)
-- KEYS[4+i] order record of user i: "sale|user|merchant|qty|amount|at_ms|key",
-- a string kept for ARGV[2] ms (it outlives the unpaid-order deadline; MySQL
-- keeps the order for good)
-- ARGV[1] sale id, ARGV[2] order retention ms, then per user i: user, key,
-- qty, order id (the qty as a canonical integer: it is written as given)
-- Returns, per user, five values: outcome, order id, qty, amount, remaining
-- stock. Outcomes: ok, repeat, sold_out, limit_reached, not_started, ended,
-- bad_qty, not_found.
--
-- The stream entry: k "orders", sale, mch, at (Unix ms), and o, the orders
-- joined by ',', each "id|user|qty|amount|key" (ids, users and keys are
-- [A-Za-z0-9_-], so neither separator occurs in them; the key may be empty).
-- engine.ParseEntry reads it.
-- Numbers go into Redis as integers: Lua would write 1e15 as "1e+15".
local function int(x) return string.format('%d', x) end

-- Fence (engine/rebuild.go): without the partition's epoch marker its state
-- was lost and is being rebuilt from MySQL; decide nothing until it is back.
-- The marker holds the partition's epoch, which the stream entry carries
-- ("ep"): the settler refuses an entry a later rebuild has left behind.
local ep = redis.call('GET', KEYS[4])
if not ep then
  return redis.error_reply('REBUILDING partition state lost; waiting for its rebuild from MySQL')
end

local sale = redis.call('HMGET', KEYS[1], 'mch', 'price', 'stock', 'limit', 'start', 'end', 'sold')
local n = (#ARGV - 2) / 4
local out = {}
if not sale[1] then
  for i = 1, n do
    out[#out + 1] = 'not_found'; out[#out + 1] = ''; out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0
  end
  return out
end
local mch, price, stock, limit = sale[1], tonumber(sale[2]), tonumber(sale[3]), tonumber(sale[4])
local starts, ends = tonumber(sale[5]), tonumber(sale[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sold = 0 -- by this call
local nows = int(now) -- written into every order: formatted once

-- Every user's attempt field ("k:<user>:<key>" → "order_id|qty|amount") and
-- holding field ("u:<user>" → units), read at once. A user may come twice in
-- one batch: what this call wrote is in `wrote`, which shadows the read.
local fields = {}
for i = 1, n do
  local b = 2 + (i - 1) * 4
  fields[2 * i - 1] = 'k:' .. ARGV[b + 1] .. ':' .. ARGV[b + 2]
  fields[2 * i] = 'u:' .. ARGV[b + 1]
end
local read = redis.call('HMGET', KEYS[2], unpack(fields))
local wrote, writes, orders = {}, {}, {}

for i = 1, n do
  local b = 2 + (i - 1) * 4
  local user, key, qtys, oid = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local qty = tonumber(qtys)
  local kf, uf = fields[2 * i - 1], fields[2 * i]
  local outcome, rqty, amount = 'ok', qty, 0
  local prev, held = wrote[kf], wrote[uf]
  if prev == nil then prev = read[2 * i - 1] end
  if held == nil then held = tonumber(read[2 * i]) or 0 end
  if prev then
    -- prev is "order_id|qty|amount"
    local p1 = string.find(prev, '|', 1, true)
    local p2 = string.find(prev, '|', p1 + 1, true)
    outcome, oid = 'repeat', string.sub(prev, 1, p1 - 1)
    rqty, amount = tonumber(string.sub(prev, p1 + 1, p2 - 1)), tonumber(string.sub(prev, p2 + 1))
  elseif now < starts then
    outcome = 'not_started'
  elseif now >= ends then
    outcome = 'ended'
  elseif qty < 1 or qty > limit then
    outcome = 'bad_qty'
  elseif held + qty > limit then
    outcome = 'limit_reached'
  elseif stock < qty then
    outcome = 'sold_out'
  else
    amount = price * qty
    stock = stock - qty
    sold = sold + qty
    local amounts = int(amount)
    local att = oid .. '|' .. qtys .. '|' .. amounts
    wrote[kf], wrote[uf] = att, held + qty
    writes[#writes + 1] = kf; writes[#writes + 1] = att
    -- A holding is at most the sale's limit: tostring writes it exactly.
    writes[#writes + 1] = uf; writes[#writes + 1] = tostring(held + qty)
    redis.call('SET', KEYS[4 + i], ARGV[1] .. '|' .. user .. '|' .. mch .. '|' .. qtys .. '|' ..
      amounts .. '|' .. nows .. '|' .. key, 'PX', ARGV[2])
    orders[#orders + 1] = oid .. '|' .. user .. '|' .. qtys .. '|' .. amounts .. '|' .. key
  end
  if outcome ~= 'ok' and outcome ~= 'repeat' then
    oid, rqty, amount = '', 0, 0
  end
  out[#out + 1] = outcome; out[#out + 1] = oid; out[#out + 1] = rqty; out[#out + 1] = amount; out[#out + 1] = stock
end
if sold > 0 then
  -- A user twice in the batch writes its holding twice: HSET keeps the last.
  redis.call('HSET', KEYS[2], unpack(writes))
  redis.call('XADD', KEYS[3], '*', 'k', 'orders', 'sale', ARGV[1], 'mch', mch, 'at', nows,
    'o', table.concat(orders, ','), 'ep', ep)
  redis.call('HSET', KEYS[1], 'stock', int(stock), 'sold', int(tonumber(sale[7]) + sold))
end
return out
