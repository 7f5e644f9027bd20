-- Revokes a token family on behalf of the client it belongs to (RFC 7009).
-- KEYS[1]: the family record
-- ARGV[1]: id of the authenticated client
-- ARGV[2]: reason recorded on the family (no spaces or colons)
-- ARGV[3]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- Needs: prelude.lua (whole, int, now_or_time, decode_family, encode_family).
-- Returns: "revoked", "already_revoked", "not_found" or "client_mismatch".
-- An already revoked record is written again unchanged: the caller's WAIT then covers the
-- revocation even when this call is a retry of one whose reply (and replication) was lost.
local now = now_or_time(ARGV[3])
if ARGV[1] == '' or not string.match(ARGV[2], '^[%w_%-]+$') or not now then
  return redis.error_reply('ERR revoke: invalid arguments')
end
local raw = redis.call('GET', KEYS[1])
local f = decode_family(raw)
if not f then
  return 'not_found'
end
if f.err then
  return f
end
if f.c ~= ARGV[1] then
  return 'client_mismatch'
end
if f.st ~= 'a' then
  redis.call('SET', KEYS[1], raw, 'KEEPTTL')
  return 'already_revoked'
end
-- KEEPTTL: the record must outlive every token that could still be presented.
f.st = 'r:' .. ARGV[2] .. ':' .. int(now)
redis.call('SET', KEYS[1], encode_family(f), 'KEEPTTL')
return 'revoked'
