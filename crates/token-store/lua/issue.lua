-- Creates a token family at generation 1.
-- KEYS[1]: the family record ("<prefix>{<family id>}")
-- ARGV[1]: client id
-- ARGV[2]: scopes, space-separated (may be empty)
-- ARGV[3]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- ARGV[4]: id of the key that signs generation 1
-- ARGV[5]: absolute lifetime, ms (> 0): the family lapses this long after now
-- ARGV[6]: idle TTL, ms
-- ARGV[7]: optional: memory high-water mark, permille of maxmemory (absent or 0: none)
-- The subject is not stored: it travels in the tokens (memory budget).
-- Needs: prelude.lua (MAX_WHOLE, whole, int, now_or_time, above_high_water, encode_family).
-- Returns: {"created", now, absolute expiry} (ms; the pair of generation 1 is issued at now),
--          {"store_full"} when Redis is past the high-water mark (nothing written),
--          or an error if the family exists or an argument is invalid.
local now = now_or_time(ARGV[3])
local lifetime = whole(ARGV[5])
local idle_ttl = whole(ARGV[6])
local high_water = whole(ARGV[7] or '0')
if ARGV[1] == '' or string.find(ARGV[1], '%s') or ARGV[4] == '' or string.find(ARGV[4], '%s')
    or not now or not lifetime or lifetime <= 0 or now + lifetime > MAX_WHOLE
    or not idle_ttl or idle_ttl <= 0
    or not high_water or high_water > 1000 then
  return redis.error_reply('ERR issue: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('ERR issue: family already exists')
end
-- New families are the first thing refused as Redis fills: rotating never grows memory.
if above_high_water(high_water) then
  return {'store_full'}
end
local absolute_expiry = now + lifetime
local record = encode_family({
  g = 1, t = now, k = ARGV[4], x = absolute_expiry, st = 'a', c = ARGV[1], sc = ARGV[2]})
-- The TTL only collects garbage; expiry decisions compare against the stored times.
redis.call('SET', KEYS[1], record, 'PX', int(math.min(idle_ttl, lifetime)))
return {'created', int(now), int(absolute_expiry)}
