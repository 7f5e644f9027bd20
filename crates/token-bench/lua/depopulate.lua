-- Deletes the hashes populate.lua created, so a shared Redis is left as it was, and says what
-- the benchmark did to their families: each call presents generation 1, so a family the
-- benchmark reached is at generation 2 (one call rotated it, any later ones replayed), one it
-- did not reach is still at 1, and anything else (no family, another generation, a revoked
-- one) means calls did not do what the ceiling claims to measure.
-- ARGV[1]: key prefix up to the hash tag's opening brace
-- ARGV[2]: first index (inclusive)
-- ARGV[3]: last index (exclusive)
-- ARGV[4]: the family id (the field of every hash)
-- Needs: token-store's prelude.lua (decode_family), prepended at load time.
-- Returns: {hashes deleted, families at generation 2, at generation 1, anything else}.
local prefix, first, last, family = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if not first or not last or last < first or not family or family == '' then
  return redis.error_reply('ERR depopulate: invalid range')
end
local deleted, rotated, untouched, other = 0, 0, 0, 0
for i = first, last - 1 do
  local key = prefix .. string.format('%012d', i) .. '}'
  local f = decode_family(redis.call('HGET', key, family) or nil)
  if f and not f.err and f.st == 'a' and f.g == 2 then
    rotated = rotated + 1
  elseif f and not f.err and f.st == 'a' and f.g == 1 then
    untouched = untouched + 1
  else
    other = other + 1
  end
  deleted = deleted + redis.call('UNLINK', key)
end
return {deleted, rotated, untouched, other}
