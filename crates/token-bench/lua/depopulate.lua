-- Deletes the families populate.lua created, so a shared Redis is left as it was.
-- ARGV[1]: key prefix up to the hash tag's opening brace
-- ARGV[2]: first index (inclusive)
-- ARGV[3]: last index (exclusive)
-- Returns: the number of keys deleted.
local prefix, first, last = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if not first or not last or last < first then
  return redis.error_reply('ERR depopulate: invalid range')
end
local deleted = 0
for i = first, last - 1 do
  deleted = deleted + redis.call('UNLINK', prefix .. string.format('%012d', i) .. '}')
end
return deleted
