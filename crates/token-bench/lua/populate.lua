-- Creates families for the ceiling benchmark, as issue.lua would: each family one field of its
-- subject's hash. redis-benchmark draws every __rand_int__ (12 zero-padded digits) of a command
-- on its own, so the hash key is the only random part: one hash per index (a subject with one
-- family, the common case), the family field always the same id. Benchmark use only: it
-- touches keys not passed in KEYS, which is fine on a single node.
-- ARGV[1]: key prefix up to the hash tag's opening brace, e.g. "bench:s:{"
-- ARGV[2]: first index (inclusive)
-- ARGV[3]: last index (exclusive)
-- ARGV[4]: rotation (and issue) time, ms since the epoch
-- ARGV[5]: absolute expiry, ms since the epoch
-- ARGV[6]: client id
-- ARGV[7]: the family id (the field of every hash)
-- ARGV[8]: idle TTL, ms: the hash's TTL, as issue.lua sets it
-- Needs: token-store's prelude.lua (whole, int, encode_family), prepended at load time
-- (token_store::script::prefixed_with_prelude), so families are written in the one format.
-- Returns: the number of families created.
local prefix, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rotated_at, expiry, idle_ttl = whole(ARGV[4]), whole(ARGV[5]), whole(ARGV[8])
local family = ARGV[7]
if not first or not last or last < first then
  return redis.error_reply('ERR populate: invalid range')
end
if not rotated_at or not expiry or not idle_ttl or ARGV[6] == '' or not family
    or family == '' or string.sub(family, 1, 1) == '!' then
  return redis.error_reply('ERR populate: invalid family')
end
local record = encode_family({g = 1, t = rotated_at, k = 'k1', i = rotated_at, x = expiry,
  st = 'a', c = ARGV[6], sc = 'f'})
local ttl = int(math.min(idle_ttl, expiry - rotated_at))
for i = first, last - 1 do
  local key = prefix .. string.format('%012d', i) .. '}'
  redis.call('HSET', key, family, record)
  redis.call('PEXPIRE', key, ttl)
end
return last - first
