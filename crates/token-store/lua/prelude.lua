-- Prepended to every script of this folder by scripts.rs (Redis scripts cannot import), so
-- the checks and the family record format they share are written once. Locals only: Redis
-- forbids script globals.

-- A non-negative whole number written in plain digits, or nil: fractions, exponents and
-- signs are refused before anything is written (a later PEXPIRE would fail mid-script).
local function whole(v)
  if type(v) == 'string' and string.match(v, '^%d+$') then
    return tonumber(v)
  end
  return nil
end

-- Numbers go out as integer strings: tostring() would print large ones in exponent form.
local function int(n)
  return string.format('%.0f', n)
end

-- A family is one string, fields separated by single spaces, scopes last:
--   <generation> <rotated at, ms> <key id> <absolute expiry, ms> <status> <client id> [<scopes>]
-- status is "a" (active) or "r:<reason>:<revoked at, ms>". One compact string, not a hash:
-- it keeps a family within its memory budget and stays readable with GET.
local function decode_family(record)
  if not record then
    return nil
  end
  local g, t, k, x, st, c, sc =
    string.match(record, '^(%d+) (%d+) ([^ ]+) (%d+) ([^ ]+) ([^ ]+) ?(.*)$')
  if not g then
    return redis.error_reply('ERR corrupt family record')
  end
  return {g = tonumber(g), t = tonumber(t), k = k, x = tonumber(x), st = st, c = c, sc = sc}
end

local function encode_family(f)
  local record = table.concat({int(f.g), int(f.t), f.k, int(f.x), f.st, f.c}, ' ')
  if f.sc ~= '' then
    record = record .. ' ' .. f.sc
  end
  return record
end
