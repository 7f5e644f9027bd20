-- Revokes a token family on behalf of the client it belongs to (RFC 7009).
-- KEYS[1]: the subject's hash (its families and revocation markers; prelude.lua)
-- ARGV[1]: id of the authenticated client
-- ARGV[2]: reason recorded on the family (no spaces or colons)
-- ARGV[3]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- ARGV[4]: the family id (the field of KEYS[1])
-- Needs: prelude.lua (whole, now_or_time, b36, decode_family, encode_family, load_family).
-- Returns: "revoked", "already_revoked", "not_found" or "client_mismatch".
-- An already revoked record is written again unchanged: the caller's WAIT then covers the
-- revocation even when this call is a retry of one whose reply (and replication) was lost.
local now = now_or_time(ARGV[3])
local family = ARGV[4]
if ARGV[1] == '' or not string.match(ARGV[2], '^[%w_%-]+$') or not now
    or not family or family == '' or string.sub(family, 1, 1) == '!' then
  return redis.error_reply('ERR revoke: invalid arguments')
end
local f, revoked_at = load_family(KEYS[1], family, ARGV[1])
if not f then
  return 'not_found'
end
if f.err then
  return f
end
if f.c ~= ARGV[1] then
  return 'client_mismatch'
end
if f.st ~= 'a' or f.i <= revoked_at then
  redis.call('HSET', KEYS[1], family, encode_family(f))
  return 'already_revoked'
end
-- The hash's TTL already outlives every token of the family that could still be presented.
f.st = 'r:' .. ARGV[2] .. ':' .. b36(now)
redis.call('HSET', KEYS[1], family, encode_family(f))
return 'revoked'
