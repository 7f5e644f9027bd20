-- Replaces a live confidential client's secret hash.
-- KEYS[1]: the client hash
-- ARGV[1]: SHA-256 of the new secret
-- Returns: 1 when replaced, 0 when there is no live confidential client.
if ARGV[1] == '' then
  return redis.error_reply('ERR set_client_secret: invalid arguments')
end
local c = redis.call('HMGET', KEYS[1], 'ty', 'del')
if c[1] ~= 'confidential' or c[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'h', ARGV[1])
return 1
