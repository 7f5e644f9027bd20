-- Registers a client unless its id exists or existed (deleted ids stay reserved, so a new
-- client can never inherit an old one's token families).
-- KEYS[1]: the client hash ("<prefix>c:{<client id>}")
-- ARGV[1]: name
-- ARGV[2]: client type: "confidential" or "public"
-- ARGV[3]: allowed scopes, space-separated (may be empty)
-- ARGV[4]: reuse policy: "revoke-family" or "reject-only"
-- ARGV[5]: SHA-256 of the secret (empty for public clients)
-- ARGV[6]: now, ms since the epoch
-- ARGV[7]: access token format: "opaque" or "jwt" (stored as field "af" only when "jwt", so
--          an opaque client's hash is as it always was)
-- ARGV[8]: JWT audience (field "au"; may be empty, and must be for an opaque client)
-- Needs: prelude.lua (whole), prepended at load time.
-- Returns: 1 when created, 0 when the id is taken.
if ARGV[1] == '' or not whole(ARGV[6])
    or (ARGV[2] ~= 'confidential' and ARGV[2] ~= 'public')
    or (ARGV[4] ~= 'revoke-family' and ARGV[4] ~= 'reject-only')
    or ((ARGV[2] == 'confidential') ~= (ARGV[5] ~= ''))
    or (ARGV[7] ~= 'opaque' and ARGV[7] ~= 'jwt')
    or (ARGV[7] == 'opaque' and ARGV[8] ~= '') then
  return redis.error_reply('ERR create_client: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'ty', ARGV[2], 'sc', ARGV[3], 'rp', ARGV[4],
  'h', ARGV[5], 'ca', ARGV[6])
if ARGV[7] == 'jwt' then
  redis.call('HSET', KEYS[1], 'af', ARGV[7])
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'au', ARGV[8])
end
return 1
