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

-- Times in family records are base 36 (ms since the epoch in 8 characters, not 13): with the
-- scopes as a mask, a realistic family stays within the 64 bytes up to which Redis keeps a
-- hash in its compact listpack encoding (memory budget). tonumber(s, 36) reads them.
-- A script's top level runs on every call: no digit table is built here, the digits are
-- picked from a constant string.
local DIGITS36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function b36(n)
  local text = ''
  repeat
    local d = n % 36
    text = string.sub(DIGITS36, d + 1, d + 1) .. text
    n = (n - d) / 36
  until n == 0
  return text
end

-- The family record format is defined here, and only here: decode_family and encode_family are
-- its one definition. family_record.rs reads and writes it in Rust and token-bench's
-- populate.lua writes it through encode_family; tests/scripts.rs
-- (`family_record_agrees_with_the_prelude`) checks family_record.rs against these two.
--
-- A family is one field of its subject's hash (field: the family id), fields of the record
-- separated by single spaces:
--   <generation>[/<access mask>] <rotated at> <key id> <issued at> <absolute expiry> <status>
--   <client id> <scope mask>
-- Times are ms since the epoch in base 36. status is "a" (active) or
-- "r:<reason>:<revoked at, base 36>". The scope mask (hex) says which of the client's allowed
-- scopes (fixed at registration; bit i: the i-th, sorted) the family was granted. The access
-- mask (decimal), when present, is which of the family's scopes (bit i: the i-th) the current
-- generation's access token carries, as asked by the refresh that made it; absent means all of
-- them. A grace replay re-delivers exactly that token. Masks stay strings here: 64 bits are
-- beyond what a Lua number holds exactly. Fields a script does not change are written back as
-- read (i, x and sc keep their text), so a rotation converts only what it changes.
local function decode_family(record)
  if not record then
    return nil
  end
  local g, m, t, k, i, x, st, c, sc = string.match(record,
    '^(%d+)/?(%d*) (%w+) ([^ ]+) (%w+) (%w+) ([^ ]+) ([^ ]+) (%x+)$')
  if not g then
    return redis.error_reply('ERR corrupt family record')
  end
  return {g = tonumber(g), m = m, t = tonumber(t, 36), k = k, is = i, i = tonumber(i, 36),
    xs = x, x = tonumber(x, 36), st = st, c = c, sc = sc}
end

local function encode_family(f)
  local g = int(f.g)
  if f.m ~= nil and f.m ~= '' then
    g = g .. '/' .. f.m
  end
  return table.concat({g, b36(f.t), f.k, f.is or b36(f.i), f.xs or b36(f.x), f.st, f.c, f.sc},
    ' ')
end

-- Subject revocation markers: fields of the subject's hash that no family id can be (ids are
-- base64url). '!' holds when the whole subject was last revoked, '!<client id>' when its
-- families of that client were; each a time in base 36. A family issued at or before a marker
-- that applies to it is revoked, whatever its record says: RevokeSubjectSessions is one O(1)
-- write, atomic against every rotation of the subject, which reads the markers with the record.
local function marker_field(client)
  return '!' .. client
end

-- The latest marker that applies to families of `client` (0 when none).
local function subject_revoked_at(all, of_client)
  local a = all and tonumber(all, 36) or 0
  local c = of_client and tonumber(of_client, 36) or 0
  return math.max(a, c)
end

-- A family's record with the markers that apply to it: HMGET of the record, the subject-wide
-- marker and the presenting client's (the record's own client's when it names another), in one
-- call. Returns the decoded record (nil when absent, an error reply when corrupt), the marker
-- time that applies (0: none) and the record as stored. `client` '' reads the record's own
-- client's marker.
local function load_family(key, family, client)
  local r = redis.call('HMGET', key, family, '!', marker_field(client))
  local f = decode_family(r[1])
  local revoked_at = subject_revoked_at(r[2] or nil, r[3] or nil)
  if f and not f.err and f.c ~= client then
    revoked_at = subject_revoked_at(r[2] or nil, redis.call('HGET', key, marker_field(f.c)) or nil)
  end
  return f, revoked_at, r[1]
end

-- Keeps the subject's hash alive at least `ms` longer: its TTL covers the longest-lived family
-- in it. Only garbage collection: expiry decisions compare stored times. GT moves a TTL only
-- later (a rotation: one call); NX gives a just-created hash its first one.
-- `ms_text`, when given, is `ms` as text already (an argument as received): no conversion.
local function extend_ttl(key, ms, ms_text)
  local text = ms_text or int(ms)
  if redis.call('PEXPIRE', key, text, 'GT') == 0 then
    redis.call('PEXPIRE', key, text, 'NX')
  end
end
