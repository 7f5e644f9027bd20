-- One page of a client's audit, newest first, filtered by time and outcome.
-- KEYS[1]: the client's audit stream, <prefix>a:{<client id>}
-- ARGV[1]: since (ms, inclusive)   ARGV[2]: until (ms, exclusive, > since)
-- ARGV[3]: page size (> 0)
-- ARGV[4]: continue after this event id (exclusive; from the previous page), or ''
-- ARGV[5]: the outcomes to keep, space separated, or '' for all
-- ARGV[6]: the most entries to examine (> 0): bounds the script's run time
-- Needs: prelude.lua (whole, int), prepended at load time.
-- Returns: {next, id, at, outcome, reason, detail, family, generation, trace, id, ...}:
--          next is the id to continue after, or '' when nothing older is left to examine.
local since = whole(ARGV[1])
local until_ms = whole(ARGV[2])
local page_size = whole(ARGV[3])
local after = ARGV[4]
local budget = whole(ARGV[6])
if not since or not until_ms or until_ms <= since or not page_size or page_size < 1
    or not budget or budget < 1 then
  return redis.error_reply('ERR audit: bad time range, page size or budget')
end
if after ~= '' and not string.match(after, '^%d+%-%d+$') then
  return redis.error_reply('ERR audit: bad continuation id')
end
local wanted = nil
if ARGV[5] ~= '' then
  wanted = {}
  for outcome in string.gmatch(ARGV[5], '[^ ]+') do
    wanted[outcome] = true
  end
end

local upper = int(until_ms - 1)
-- A continuation narrows the window, never widens it: an id at or past `until` (a token from
-- a wider window) leaves `until` in force.
if after ~= '' and tonumber(string.match(after, '^(%d+)-')) < until_ms then
  upper = '(' .. after
end
local lower = int(since)
local reply = {''}
local found = 0
local examined = 0
local chunk = 100
while true do
  local entries = redis.call('XREVRANGE', KEYS[1], upper, lower, 'COUNT', chunk)
  for _, entry in ipairs(entries) do
    local id = entry[1]
    local fields = {}
    local kv = entry[2]
    for j = 1, #kv, 2 do
      fields[kv[j]] = kv[j + 1]
    end
    examined = examined + 1
    if not wanted or wanted[fields.o] then
      local at = string.match(id, '^(%d+)-')
      table.insert(reply, id)
      table.insert(reply, at)
      table.insert(reply, fields.o or '')
      table.insert(reply, fields.r or '')
      table.insert(reply, fields.d or '')
      table.insert(reply, fields.f or '')
      table.insert(reply, fields.g or '0')
      table.insert(reply, fields.t or '')
      found = found + 1
    end
    if found == page_size or examined >= budget then
      reply[1] = id
      return reply
    end
  end
  if #entries < chunk then
    return reply
  end
  upper = '(' .. entries[#entries][1]
end
