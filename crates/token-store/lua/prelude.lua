-- Prepended to every script of this folder by src/script/ (Redis scripts cannot import), so
-- the checks and the family record format they share are written once. Locals only: Redis
-- forbids script globals.

-- The largest integer a Lua number (a double) holds exactly: 2^53 - 1.
local MAX_WHOLE = 9007199254740991

-- A non-negative whole number written in plain digits, at most MAX_WHOLE, or nil: fractions,
-- exponents, signs and numbers a double would round are refused before anything is written
-- (a later PEXPIRE would fail mid-script).
local function whole(v)
  if type(v) == 'string' and string.match(v, '^%d+$') then
    local n = tonumber(v)
    -- Beyond 2^53 a Lua number no longer holds every integer: refuse rather than round.
    if n <= MAX_WHOLE then
      return n
    end
  end
  return nil
end

-- The one clock (DESIGN.md): every time decision about a family reads Redis's clock, the
-- shard's in a Cluster, never the clock of whichever instance sent the call. Production passes
-- '' and the script reads TIME; tests pass a time of their choosing. nil when malformed.
local function now_or_time(v)
  if v == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return whole(v)
end

-- Whether this node's memory has reached `permille` of its maxmemory (never when permille is
-- 0 or no maxmemory is set). New state is refused from there on, so that the families that
-- exist, whose rotations do not grow memory, never meet Redis's own out-of-memory refusal.
local function above_high_water(permille)
  if permille == 0 then
    return false
  end
  local info = redis.call('INFO', 'memory')
  local used = tonumber(string.match(info, 'used_memory:(%d+)'))
  local max = tonumber(string.match(info, 'maxmemory:(%d+)'))
  return used ~= nil and max ~= nil and max > 0 and used * 1000 >= max * permille
end

-- Numbers go out as integer strings: tostring() would print large ones in exponent form.
local function int(n)
  return string.format('%.0f', n)
end

-- The family record format is defined here, and only here: decode_family and encode_family are
-- its one definition. family_record.rs reads and writes it in Rust and token-bench's
-- populate.lua writes it through encode_family; tests/scripts.rs
-- (`family_record_agrees_with_the_prelude`) checks family_record.rs against these two.
--
-- A family is one string, fields separated by single spaces, scopes last:
--   <generation>[/<access mask>] <rotated at, ms> <key id> <absolute expiry, ms> <status>
--   <client id> [<scopes>]
-- status is "a" (active) or "r:<reason>:<revoked at, ms>". The access mask, when present, is
-- which of the family's scopes (bit i: the i-th scope) the current generation's access token
-- carries, as asked by the refresh that made it; absent means all of them. A grace replay
-- re-delivers exactly that token. It stays a string here: a mask of 64 bits is beyond what a
-- Lua number holds exactly. One compact string, not a hash: it keeps a family within its
-- memory budget and stays readable with GET.
local function decode_family(record)
  if not record then
    return nil
  end
  local g, m, t, k, x, st, c, sc =
    string.match(record, '^(%d+)/?(%d*) (%d+) ([^ ]+) (%d+) ([^ ]+) ([^ ]+) ?(.*)$')
  if not g then
    return redis.error_reply('ERR corrupt family record')
  end
  return {g = tonumber(g), m = m, t = tonumber(t), k = k, x = tonumber(x), st = st, c = c,
    sc = sc}
end

local function encode_family(f)
  local g = int(f.g)
  if f.m ~= nil and f.m ~= '' then
    g = g .. '/' .. f.m
  end
  local record = table.concat({g, int(f.t), f.k, int(f.x), f.st, f.c}, ' ')
  if f.sc ~= '' then
    record = record .. ' ' .. f.sc
  end
  return record
end
