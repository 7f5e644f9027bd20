-- Reads one family with the subject revocation markers that apply to it.
-- KEYS[1]: the subject's hash (its families and revocation markers; prelude.lua)
-- ARGV[1]: the family id (the field of KEYS[1])
-- Needs: prelude.lua (load_family, and what it needs).
-- Returns: {record, revoked at} where record is the stored record (false when absent) and
--          revoked at the latest marker that applies to it, ms (0: none). A family issued at
--          or before that time is revoked whatever its record says.
local family = ARGV[1]
if not family or family == '' or string.sub(family, 1, 1) == '!' then
  return redis.error_reply('ERR read_family: invalid arguments')
end
local f, revoked_at, record = load_family(KEYS[1], family, '')
if not f then
  return {false, 0}
end
if f.err then
  return f
end
return {record, revoked_at}
