-- After revoke_subject.lua: removes the families a marker covers, a batch at a time (the
-- caller walks the hash with HSCAN), and counts those that were still active, per client.
-- Each batch is short, so Redis never stalls on a subject with many families; the marker has
-- already revoked them all, so a sweep cut short leaves nothing usable (issue.lua's tidying
-- and the hash's TTL collect the rest).
-- KEYS[1]: the subject's hash
-- ARGV[1]: client id, or '' for every client (as given to revoke_subject.lua)
-- ARGV[2]: the marker's time, ms (revoke_subject.lua's reply)
-- ARGV[3]: idle TTL, ms: a family unused this long had already lapsed
-- ARGV[4]: what that marker field held before, ms (revoke_subject.lua's second reply; 0: none)
-- ARGV[5..]: family ids (fields of KEYS[1]); markers and absent fields are skipped
-- Needs: prelude.lua (whole, decode_family, marker_field, subject_revoked_at).
-- Returns: {client id, count, ...}: families removed that were active at the marker's time and
--          not already revoked (by an earlier marker or on their own).
local at = whole(ARGV[2])
local idle_ttl = whole(ARGV[3])
local before = whole(ARGV[4])
if not at or not before or not idle_ttl or idle_ttl <= 0 or string.find(ARGV[1], '%s') then
  return redis.error_reply('ERR revoke_subject_sweep: invalid arguments')
end
-- When each client's families were last revoked before this marker: the marker's old value and
-- the other marker that applies (the subject-wide one, or the client's own).
local previously = {}
local function revoked_before(client)
  if not previously[client] then
    local other = redis.call('HGET', KEYS[1], ARGV[1] == '' and marker_field(client) or '!')
    previously[client] = math.max(before, subject_revoked_at(other or nil, nil))
  end
  return previously[client]
end
local counts, order = {}, {}
for n = 5, #ARGV do
  local family = ARGV[n]
  if string.sub(family, 1, 1) ~= '!' then
    local f = decode_family(redis.call('HGET', KEYS[1], family))
    if f and not f.err and f.i <= at and (ARGV[1] == '' or f.c == ARGV[1]) then
      if f.st == 'a' and at < f.x and at < f.t + idle_ttl and f.i > revoked_before(f.c) then
        if not counts[f.c] then
          counts[f.c] = 0
          order[#order + 1] = f.c
        end
        counts[f.c] = counts[f.c] + 1
      end
      redis.call('HDEL', KEYS[1], family)
    end
  end
end
local reply = {}
for _, client in ipairs(order) do
  reply[#reply + 1] = client
  reply[#reply + 1] = counts[client]
end
return reply
