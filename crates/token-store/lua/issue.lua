-- Creates a token family at generation 1, as a field of its subject's hash.
-- KEYS[1]: the subject's hash (its families and revocation markers; prelude.lua)
-- ARGV[1]: client id
-- ARGV[2]: scope mask: which of the client's allowed scopes the family holds (lowercase hex,
--          no leading zeros, as family_record.rs writes it)
-- ARGV[3]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- ARGV[4]: id of the key that signs generation 1
-- ARGV[5]: absolute lifetime, ms (> 0): the family lapses this long after now
-- ARGV[6]: idle TTL, ms
-- ARGV[7]: memory high-water mark, permille of maxmemory ('' or 0: none)
-- ARGV[8]: the family id (the field of KEYS[1])
-- The subject itself is not stored: the key holds a hash of it, and the tokens carry it.
-- A family issued in the millisecond of a revocation marker that applies to it starts a
-- millisecond later: "issued after the revocation" must stay true of it.
-- Each call also tidies a few fields chosen at random (HRANDFIELD): families that expired
-- unused leave. So the hash holds a bounded share of dead fields without any sweep of the
-- keyspace. Markers stay as long as the hash (at most one per client plus one).
-- Needs: prelude.lua (MAX_WHOLE, whole, int, now_or_time, above_high_water, b36,
--        encode_family, decode_family, marker_field, subject_revoked_at,
--        extend_ttl).
-- Returns: {"created", now, absolute expiry} (ms; the pair of generation 1 is issued at now),
--          {"store_full"} when Redis is past the high-water mark (nothing written),
--          or an error if the family exists or an argument is invalid.
local now = now_or_time(ARGV[3])
local lifetime = whole(ARGV[5])
local idle_ttl = whole(ARGV[6])
local high_water = whole(ARGV[7] == '' and '0' or ARGV[7] or '0')
local family = ARGV[8]
if ARGV[1] == '' or string.find(ARGV[1], '%s') or ARGV[4] == '' or string.find(ARGV[4], '%s')
    or not (ARGV[2] == '0' or string.match(ARGV[2], '^[1-9a-f][0-9a-f]*$')) or #ARGV[2] > 16
    or not now or not lifetime or lifetime <= 0 or now + lifetime > MAX_WHOLE
    or not idle_ttl or idle_ttl <= 0
    or not high_water or high_water > 1000
    or not family or family == '' or string.find(family, '[%s!]') then
  return redis.error_reply('ERR issue: invalid arguments')
end
if redis.call('HEXISTS', KEYS[1], family) == 1 then
  return redis.error_reply('ERR issue: family already exists')
end
-- New families are the first thing refused as Redis fills: rotating never grows memory.
if above_high_water(high_water) then
  return {'store_full'}
end

-- Tidy: a handful of random fields, each dropped if nothing can use it any more.
local sample = redis.call('HRANDFIELD', KEYS[1], 4, 'WITHVALUES')
for n = 1, #sample, 2 do
  local field, value = sample[n], sample[n + 1]
  if string.sub(field, 1, 1) ~= '!' then
    local f = decode_family(value)
    if f and not f.err and (now >= f.x or now >= f.t + idle_ttl) then
      redis.call('HDEL', KEYS[1], field)
    end
  end
end

local markers = redis.call('HMGET', KEYS[1], '!', marker_field(ARGV[1]))
local revoked_at = subject_revoked_at(markers[1] or nil, markers[2] or nil)
if now <= revoked_at then
  now = revoked_at + 1
end
local absolute_expiry = now + lifetime
local record = encode_family({g = 1, t = now, k = ARGV[4], i = now, x = absolute_expiry,
  st = 'a', c = ARGV[1], sc = ARGV[2]})
redis.call('HSET', KEYS[1], family, record)
-- The TTL only collects garbage; expiry decisions compare against the stored times.
extend_ttl(KEYS[1], math.min(idle_ttl, lifetime))
return {'created', int(now), int(absolute_expiry)}
