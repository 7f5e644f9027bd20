-- Appends refresh events to one client's audit stream and trims it by count and by age.
-- KEYS[1]: the client's audit stream, <prefix>a:{<client id>}
-- KEYS[2]: the client's record, <prefix>c:{<client id>} (same hash tag: one Cluster slot)
-- ARGV[1]: now (ms)   ARGV[2]: retention (ms, > 0)   ARGV[3]: most events kept (> 0)
-- ARGV[4..]: the events, 7 arguments each, oldest first:
--            at (ms), outcome, reason, detail, family id, generation, trace id
-- Needs: prelude.lua (whole, int), prepended at load time.
-- Returns: the number of events appended: 0 when the client is unknown or deleted, so ids
--          that name no client never create a stream (a caller cannot grow Redis with them).
-- Stream ids are <ms>-<seq> and must grow: an event stamped before the newest one (clocks of
-- two instances apart) is filed under the newest one's millisecond.
local now = whole(ARGV[1])
local retention = whole(ARGV[2])
local max_len = whole(ARGV[3])
if not now or not retention or not max_len or retention < 1 or max_len < 1 then
  return redis.error_reply('ERR audit: now, retention and max length must be positive integers')
end
if (#ARGV - 3) % 7 ~= 0 then
  return redis.error_reply('ERR audit: events come in groups of 7 arguments')
end
-- Every number is checked before the first write: Redis does not roll scripts back.
local times = {}
for i = 4, #ARGV, 7 do
  local at = whole(ARGV[i])
  if not at or not whole(ARGV[i + 5]) then
    return redis.error_reply('ERR audit: event time and generation must be integers')
  end
  times[i] = at
end
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('HEXISTS', KEYS[2], 'del') == 1 then
  return 0
end

-- The newest id the stream ever generated, not its newest entry: XADD refuses ids at or below
-- the former, which outlives trimming (age trimming can empty the stream and keep the key).
-- The newest entry has that id unless trimming emptied the stream: only then ask XINFO, which
-- costs several times more.
local last = 0
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  last = tonumber(string.match(newest[1], '^(%d+)-'))
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then
      last = tonumber(string.match(info[j + 1], '^(%d+)-'))
    end
  end
end
local appended = 0
for i = 4, #ARGV, 7 do
  local at = math.max(times[i], last)
  last = at
  redis.call('XADD', KEYS[1], 'MAXLEN', max_len, int(at) .. '-*',
    'o', ARGV[i + 1], 'r', ARGV[i + 2], 'd', ARGV[i + 3],
    'f', ARGV[i + 4], 'g', ARGV[i + 5], 't', ARGV[i + 6])
  appended = appended + 1
end
if now > retention then
  redis.call('XTRIM', KEYS[1], 'MINID', int(now - retention))
end
-- A client that stops refreshing leaves nothing behind once its newest event has aged out.
redis.call('PEXPIRE', KEYS[1], retention)
return appended
