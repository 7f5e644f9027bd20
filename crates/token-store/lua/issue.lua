-- Creates a token family at generation 1.
-- KEYS[1]: the family record ("<prefix>{<family id>}")
-- ARGV[1]: client id
-- ARGV[2]: scopes, space-separated (may be empty)
-- ARGV[3]: now, ms since the epoch
-- ARGV[4]: id of the key that signs generation 1
-- ARGV[5]: absolute expiry, ms since the epoch
-- ARGV[6]: idle TTL, ms
-- The subject is not stored: it travels in the tokens (memory budget).
-- Needs: prelude.lua (whole, encode_family), prepended at load time.
-- Returns: "created", or an error if the family exists or an argument is invalid.
local now = whole(ARGV[3])
local absolute_expiry = whole(ARGV[5])
local idle_ttl = whole(ARGV[6])
if ARGV[1] == '' or string.find(ARGV[1], '%s') or ARGV[4] == '' or string.find(ARGV[4], '%s')
    or not now or not absolute_expiry or not idle_ttl or idle_ttl <= 0
    or absolute_expiry <= now then
  return redis.error_reply('ERR issue: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR issue: family already exists')
end
local record = encode_family({
  g = 1, t = now, k = ARGV[4], x = absolute_expiry, st = 'a', c = ARGV[1], sc = ARGV[2]})
-- The TTL only collects garbage; expiry decisions compare against the stored times.
redis.call('SET', KEYS[1], record, 'PX', int(math.min(idle_ttl, absolute_expiry - now)))
return 'created'
