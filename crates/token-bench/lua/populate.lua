-- Creates families for the ceiling benchmark, as issue.lua would, under keys that
-- redis-benchmark's __rand_int__ (12 zero-padded digits) addresses. Benchmark use only: it
-- touches keys not passed in KEYS, which is fine on a single node.
-- ARGV[1]: key prefix up to the hash tag's opening brace, e.g. "bench:f:{"
-- ARGV[2]: first index (inclusive)
-- ARGV[3]: last index (exclusive)
-- ARGV[4]: rotation time, ms since the epoch
-- ARGV[5]: absolute expiry, ms since the epoch
-- ARGV[6]: client id
-- Returns: the number of families created.
local prefix, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if not first or not last or last < first then
  return redis.error_reply('ERR populate: invalid range')
end
-- The record format is token-store's (lua/prelude.lua): g t k x status client scopes.
local record = table.concat(
  {'1', ARGV[4], 'k1', ARGV[5], 'a', ARGV[6], 'email offline_access openid profile'}, ' ')
for i = first, last - 1 do
  redis.call('SET', prefix .. string.format('%012d', i) .. '}', record)
end
return last - first
