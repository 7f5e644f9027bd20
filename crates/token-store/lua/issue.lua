-- Creates a token family at generation 1.
-- KEYS[1]: the family hash ("<prefix>f:{<family id>}")
-- ARGV[1]: client id
-- ARGV[2]: subject
-- ARGV[3]: scopes, space-separated (may be empty)
-- ARGV[4]: now, ms since the epoch
-- ARGV[5]: id of the key that signs generation 1
-- ARGV[6]: absolute expiry, ms since the epoch
-- ARGV[7]: idle TTL, ms
-- Needs: prelude.lua (whole), prepended at load time.
-- Returns: "created", or an error if the family exists or an argument is invalid.
local now = whole(ARGV[4])
local absolute_expiry = whole(ARGV[6])
local idle_ttl = whole(ARGV[7])
if ARGV[1] == '' or ARGV[2] == '' or ARGV[5] == '' or not now or not absolute_expiry
    or not idle_ttl or idle_ttl <= 0 or absolute_expiry <= now then
  return redis.error_reply('ERR issue: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR issue: family already exists')
end
redis.call('HSET', KEYS[1],
  'c', ARGV[1], 's', ARGV[2], 'sc', ARGV[3],
  'g', '1', 't', ARGV[4], 'k', ARGV[5], 'st', 'a', 'x', ARGV[6])
-- The TTL only collects garbage; expiry decisions compare against the stored times.
redis.call('PEXPIRE', KEYS[1], math.min(idle_ttl, absolute_expiry - now))
return 'created'
