-- Revokes a token family on behalf of the client it belongs to (RFC 7009).
-- KEYS[1]: the family hash
-- ARGV[1]: id of the authenticated client
-- ARGV[2]: reason recorded on the family
-- ARGV[3]: now, ms since the epoch
-- Needs: prelude.lua (whole), prepended at load time.
-- Returns: "revoked", "already_revoked", "not_found" or "client_mismatch".
if ARGV[1] == '' or ARGV[2] == '' or not whole(ARGV[3]) then
  return redis.error_reply('ERR revoke: invalid arguments')
end
local f = redis.call('HMGET', KEYS[1], 'c', 'st')
if not f[1] then
  return 'not_found'
end
if f[1] ~= ARGV[1] then
  return 'client_mismatch'
end
if f[2] ~= 'a' then
  return 'already_revoked'
end
-- The TTL stays: the record must outlive every token that could still be presented.
redis.call('HSET', KEYS[1], 'st', 'r', 'rr', ARGV[2], 'rt', ARGV[3])
return 'revoked'
