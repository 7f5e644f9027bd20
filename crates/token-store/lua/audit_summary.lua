-- Counts a client's audit events by outcome over a time range.
-- KEYS[1]: the client's audit stream, <prefix>a:{<client id>}
-- ARGV[1]: since (ms, inclusive)   ARGV[2]: until (ms, exclusive, > since)
-- Needs: prelude.lua (whole, int), prepended at load time.
-- Returns: {first id or '', last id or '', outcome, count, outcome, count, ...}. The stream
--          is bounded by its maximum length, which bounds this script's run time.
local since = whole(ARGV[1])
local until_ms = whole(ARGV[2])
if not since or not until_ms or until_ms <= since then
  return redis.error_reply('ERR audit: bad time range')
end
local counts = {}
local order = {}
local first = ''
local last = ''
local lower = int(since)
local upper = int(until_ms - 1)
local chunk = 1000
while true do
  local entries = redis.call('XRANGE', KEYS[1], lower, upper, 'COUNT', chunk)
  for _, entry in ipairs(entries) do
    local kv = entry[2]
    local outcome = ''
    for j = 1, #kv, 2 do
      if kv[j] == 'o' then
        outcome = kv[j + 1]
      end
    end
    if not counts[outcome] then
      counts[outcome] = 0
      table.insert(order, outcome)
    end
    counts[outcome] = counts[outcome] + 1
    if first == '' then
      first = entry[1]
    end
    last = entry[1]
  end
  if #entries < chunk then
    break
  end
  lower = '(' .. entries[#entries][1]
end
local reply = {first, last}
for _, outcome in ipairs(order) do
  table.insert(reply, outcome)
  table.insert(reply, int(counts[outcome]))
end
return reply
