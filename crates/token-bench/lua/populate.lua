-- Creates families for the ceiling benchmark, as issue.lua would, under keys that
-- redis-benchmark's __rand_int__ (12 zero-padded digits) addresses. Benchmark use only: it
-- touches keys not passed in KEYS, which is fine on a single node.
-- ARGV[1]: key prefix up to the hash tag's opening brace, e.g. "bench:f:{"
-- ARGV[2]: first index (inclusive)
-- ARGV[3]: last index (exclusive)
-- ARGV[4]: rotation time, ms since the epoch
-- ARGV[5]: absolute expiry, ms since the epoch
-- ARGV[6]: client id
-- Needs: token-store's prelude.lua (whole, encode_family), prepended at load time
-- (token_store::script::prefixed_with_prelude), so families are written in the one format.
-- Returns: the number of families created.
local prefix, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rotated_at, expiry = whole(ARGV[4]), whole(ARGV[5])
if not first or not last or last < first then
  return redis.error_reply('ERR populate: invalid range')
end
if not rotated_at or not expiry or ARGV[6] == '' then
  return redis.error_reply('ERR populate: invalid family')
end
local record = encode_family({g = 1, t = rotated_at, k = 'k1', x = expiry, st = 'a',
  c = ARGV[6], sc = 'email offline_access openid profile'})
for i = first, last - 1 do
  redis.call('SET', prefix .. string.format('%012d', i) .. '}', record)
end
return last - first
