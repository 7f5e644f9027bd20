-- Revokes every family of a subject, or those of one client, issued until now: one marker
-- field in the subject's hash (prelude.lua), which every script reads with a family's record.
-- O(1) whatever the number of families, and atomic against their rotations: one that ran
-- before this call is covered by it, one after it sees the marker.
-- KEYS[1]: the subject's hash
-- ARGV[1]: client id, or '' for every client of the subject
-- ARGV[2]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- Needs: prelude.lua (whole, int, now_or_time, b36, marker_field).
-- Returns: {at, before}: the marker's time, ms, families issued at or before it being revoked,
--          and the time that marker field held before (0: none), for the sweep's count.
--          A subject without a hash has no families: nothing is written.
-- A later marker never moves back: a retried call leaves the latest time in place.
local now = now_or_time(ARGV[2])
if not now or string.find(ARGV[1], '%s') then
  return redis.error_reply('ERR revoke_subject: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {now, 0}
end
local field = marker_field(ARGV[1])
local before = tonumber(redis.call('HGET', KEYS[1], field) or '0', 36) or 0
if before >= now then
  -- Written again: the caller's WAIT then covers it even if this call is a retry.
  redis.call('HSET', KEYS[1], field, b36(before))
  return {before, before}
end
redis.call('HSET', KEYS[1], field, b36(now))
return {now, before}
