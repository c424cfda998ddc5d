-- Decides the grabs of one sale for a batch of users, in order, atomically:
-- checks the sale window and each user's limit, decrements stock, records the
-- buyer and the order, and appends the batch's orders to the partition
-- stream as one entry. A win and its event cannot separate.
--
-- A user's grab is identified by (user, idempotency key): a retry with the same
-- pair returns the order it produced the first time, never a second one.
--
-- Redis's time goes per redis.call and per string built, and this runs for
-- every user, so nothing is written per user: the batch reads every user's
-- buyer fields in one HMGET, writes them in one HSET, writes its order
-- records into their time bucket's hash in one HSET (and one PEXPIRE), and
-- appends one stream entry (kind "orders") for all its wins.
--
-- KEYS[1] sale hash   KEYS[2] buyers hash   KEYS[3] events stream
-- KEYS[4] partition epoch marker (the fence below; its epoch goes into the entry)
-- KEYS[4+i] the order bucket of user i's order id (Keyspace.Orders: a hash of
-- order id -> "sale|user|merchant|qty|amount|at_ms|key"); every write to a
-- bucket sets its expiry to ARGV[2] ms, so a record is kept at least that
-- long after its grab (it outlives the unpaid-order deadline; MySQL keeps the
-- order for good). A batch's users nearly always share one bucket.
-- ARGV[1] sale id, ARGV[2] order retention ms, then per user i: user, key,
-- qty, order id (the qty as a canonical integer: it is written as given)
-- Returns, per user, five integers: outcome, qty, amount, remaining stock,
-- and the order id's number (its part before '-') for a repeat, else 0 (a
-- win's id is the one the caller sent). Outcomes: 0 ok, 1 repeat, 2
-- sold_out, 3 limit_reached, 4 bad_qty, 5 not_started, 6 ended, 7
-- not_found (engine/sale.go). Integers only, so that the caller decodes the
-- reply without a string per user.
--
-- The stream entry: k "orders", sale, mch, at (Unix ms), and o, the orders
-- joined by ',', each "id|user|qty|amount|key" (ids, users and keys are
-- [A-Za-z0-9_-], so neither separator occurs in them; the key may be empty),
-- and ep, the partition's epoch (the fence below). engine.ParseEntry reads it.
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
  for j = 1, 5 * n, 5 do
    out[j] = 7; out[j + 1] = 0; out[j + 2] = 0; out[j + 3] = 0; out[j + 4] = 0
  end
  return out
end
local mch, price, stock, limit = sale[1], tonumber(sale[2]), tonumber(sale[3]), tonumber(sale[4])
local starts, ends = tonumber(sale[5]), tonumber(sale[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sold = 0 -- by this call
-- What every order record of this call shares, built once: the record is
-- head .. user .. mid .. qty '|' amount .. tail .. key.
local nows = int(now)
local head, mid, tail = ARGV[1] .. '|', '|' .. mch .. '|', '|' .. nows .. '|'

-- Every user's attempt field ("k:<user>:<key>" → "order_id|qty|amount") and
-- holding field ("u:<user>" → units), read at once. A user may come twice in
-- one batch: what this call wrote is in `wrote`, which shadows the read.
local fields = {}
for i = 1, n do
  local b = 4 * i
  fields[2 * i - 1] = 'k:' .. ARGV[b - 1] .. ':' .. ARGV[b]
  fields[2 * i] = 'u:' .. ARGV[b - 1]
end
local read = redis.call('HMGET', KEYS[2], unpack(fields))
-- nw, no: lengths of writes and orders; buckets: bucket key -> its HSET
-- arguments (order id, record, ...), in first-seen order in bkeys.
local wrote, writes, orders, nw, no = {}, {}, {}, 0, 0
local buckets, bkeys, bucket, bkey = {}, {}, nil, nil

for i = 1, n do
  local b = 4 * i
  local user, key, qtys, oid = ARGV[b - 1], ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local qty = tonumber(qtys)
  local kf, uf = fields[2 * i - 1], fields[2 * i]
  local outcome, rqty, amount, ref = 0, qty, 0, 0
  local prev, held = wrote[kf], wrote[uf]
  if prev == nil then prev = read[2 * i - 1] end
  if held == nil then held = tonumber(read[2 * i]) or 0 end
  if prev then
    -- prev is "order_id|qty|amount", the order id "<number>-<partition>":
    -- the number goes back as a string of digits (Lua's numbers would round
    -- a 63-bit id), read as an integer by the caller.
    local p1 = string.find(prev, '|', 1, true)
    local p2 = string.find(prev, '|', p1 + 1, true)
    local dash = string.find(prev, '-', 1, true) or p1
    outcome, ref = 1, string.sub(prev, 1, dash - 1)
    rqty, amount = tonumber(string.sub(prev, p1 + 1, p2 - 1)), tonumber(string.sub(prev, p2 + 1))
  elseif now < starts then
    outcome = 5
  elseif now >= ends then
    outcome = 6
  elseif qty < 1 or qty > limit then
    outcome = 4
  elseif held + qty > limit then
    outcome = 3
  elseif stock < qty then
    outcome = 2
  else
    amount = price * qty
    stock = stock - qty
    sold = sold + qty
    -- The common case (one unit, a first purchase) formats no number: the
    -- amount is the price as the sale hash holds it, the holding the qty.
    local amounts, holds = sale[2], qtys
    if qty ~= 1 then amounts = int(amount) end
    -- A holding is at most the sale's limit: tostring writes it exactly.
    if held ~= 0 then holds = tostring(held + qty) end
    local att = oid .. '|' .. qtys .. '|' .. amounts
    wrote[kf], wrote[uf] = att, held + qty
    writes[nw + 1] = kf; writes[nw + 2] = att; writes[nw + 3] = uf; writes[nw + 4] = holds
    nw = nw + 4
    local bk = KEYS[4 + i]
    if bk ~= bkey then
      bucket = buckets[bk]
      if bucket == nil then
        bucket = {}
        buckets[bk] = bucket
        bkeys[#bkeys + 1] = bk
      end
      bkey = bk
    end
    local m = #bucket
    bucket[m + 1] = oid
    bucket[m + 2] = head .. user .. mid .. qtys .. '|' .. amounts .. tail .. key
    no = no + 1
    orders[no] = oid .. '|' .. user .. '|' .. qtys .. '|' .. amounts .. '|' .. key
  end
  if outcome > 1 then
    rqty, amount = 0, 0
  end
  local j = 5 * i - 4
  out[j] = outcome; out[j + 1] = rqty; out[j + 2] = amount; out[j + 3] = stock; out[j + 4] = ref
end
if sold > 0 then
  -- A user twice in the batch writes its holding twice: HSET keeps the last.
  redis.call('HSET', KEYS[2], unpack(writes, 1, nw))
  for _, bk in ipairs(bkeys) do
    redis.call('HSET', bk, unpack(buckets[bk]))
    redis.call('PEXPIRE', bk, ARGV[2])
  end
  redis.call('XADD', KEYS[3], '*', 'k', 'orders', 'sale', ARGV[1], 'mch', mch, 'at', nows,
    'o', table.concat(orders, ','), 'ep', ep)
  redis.call('HSET', KEYS[1], 'stock', int(stock), 'sold', int(tonumber(sale[7]) + sold))
end
return out
