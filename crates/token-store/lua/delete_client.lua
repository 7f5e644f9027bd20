-- Deletes a live client, leaving a tombstone that keeps its id reserved.
-- KEYS[1]: the client hash
-- ARGV[1]: now, ms since the epoch
-- Needs: prelude.lua (whole), prepended at load time.
-- Returns: 1 when deleted, 0 when there is no live client.
if not whole(ARGV[1]) then
  return redis.error_reply('ERR delete_client: invalid arguments')
end
local c = redis.call('HMGET', KEYS[1], 'ty', 'del')
if not c[1] or c[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'del', ARGV[1])
return 1
