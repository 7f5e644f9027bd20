-- The refresh state machine (DESIGN.md): compare the presented generation p with the stored
-- generation g and rotate, replay, roll forward or refuse, all in one atomic step.
-- KEYS[1]: the subject's hash (its families and revocation markers; prelude.lua)
-- ARGV[1]: presented generation p (>= 1)
-- ARGV[2]: id of the authenticated client
-- ARGV[3]: now, ms since the epoch; '' (production) reads Redis's clock (TIME)
-- ARGV[4]: grace period, ms (0 turns replays off)
-- ARGV[5]: idle TTL, ms
-- ARGV[6]: id of the key that signs a new generation
-- ARGV[7]: reuse policy: "revoke-family" or "reject-only"
-- ARGV[8]: when the request reached the service, ms on Redis's clock as the instance tracks it
--          (for the stale-duplicate rule); '' means now
-- ARGV[9]: the access mask a new generation's access token carries (the caller's narrowing,
--          as a decimal mask over the family's scopes); '' means all
-- ARGV[10]: the family id (the field of KEYS[1])
-- ARGV[11]: the presented token's rotation time, ms: a family absent from the hash whose token
--          is no newer than the subject's revocation marker was revoked with its subject
-- Needs: prelude.lua (whole, int, now_or_time, decode_family, encode_family, load_family,
--        extend_ttl, b36).
-- Returns: {outcome} for refusals: "expired", "revoked", "client_mismatch",
--          "reused_revoked" (family revoked now), "reused_rejected" (family kept),
--          "reused_stale" (a request issued before the current generation existed: kept);
--          {outcome, g, t, key id, scope mask, absolute expiry, access mask} for "rotated",
--          "replayed" and "rolled_forward", describing the generation whose pair the caller
--          gets (access mask '' means all the family's scopes; a replay answers the mask the
--          winner asked for, whatever this caller asks). g, t and the absolute expiry are
--          integer replies: whole numbers below 2^53, which Redis sends exactly, with none of
--          the number-to-text conversions that cost about a microsecond each in Redis's Lua.
local p = whole(ARGV[1])
local now = now_or_time(ARGV[3])
local grace = whole(ARGV[4])
local idle_ttl = whole(ARGV[5])
local policy = ARGV[7]
local stamp = now
if ARGV[8] ~= nil and ARGV[8] ~= '' then
  stamp = whole(ARGV[8])
end
local mask = ARGV[9] or ''
local family = ARGV[10]
local presented_at = whole(ARGV[11])
if not p or p < 1 or not now or not stamp or not grace or not presented_at
    or not family or family == '' or string.sub(family, 1, 1) == '!' 
    or (mask ~= '' and (not string.match(mask, '^%d+$') or #mask > 20))
    or not idle_ttl or idle_ttl <= 0 or ARGV[2] == '' or ARGV[6] == ''
    or string.find(ARGV[2], '%s') or string.find(ARGV[6], '%s')
    or (policy ~= 'revoke-family' and policy ~= 'reject-only') then
  return redis.error_reply('ERR rotate: invalid arguments')
end

local f, revoked_at = load_family(KEYS[1], family, ARGV[2])
if not f then
  -- Removed: by its subject's revocation if its token predates the marker, else by expiry.
  if revoked_at > 0 and presented_at <= revoked_at then
    return {'revoked'}
  end
  return {'expired'}
end
if f.err then
  return f
end
if now >= f.x or now >= f.t + idle_ttl then
  -- Nothing can refresh it again: the field leaves the subject's hash now.
  redis.call('HDEL', KEYS[1], family)
  return {'expired'}
end
if f.st ~= 'a' or f.i <= revoked_at then
  return {'revoked'}
end
if f.c ~= ARGV[2] then
  return {'client_mismatch'}
end

local function issued(outcome, generation, rotated_at, key_id, access_mask)
  return {outcome, generation, rotated_at, key_id, f.sc, f.x, access_mask}
end
local function advance(outcome, generation)
  f.g, f.t, f.k, f.m = generation, now, ARGV[6], mask
  redis.call('HSET', KEYS[1], family, encode_family(f))
  -- Mostly the idle TTL, which arrived as text (ARGV[5]): sent on unconverted when it is in
  -- the canonical form PEXPIRE takes (no leading zero).
  if idle_ttl <= f.x - now and string.byte(ARGV[5], 1) ~= 48 then
    extend_ttl(KEYS[1], idle_ttl, ARGV[5])
  else
    extend_ttl(KEYS[1], f.x - now)
  end
  return issued(outcome, generation, now, ARGV[6], mask)
end

if p == f.g then
  return advance('rotated', f.g + 1)
end
if p > f.g then
  -- Only we can mint a newer generation, so the store lost a write (failover): move past it.
  return advance('rolled_forward', p + 1)
end
if p == f.g - 1 and grace > 0 and now - f.t <= grace then
  return issued('replayed', f.g, f.t, f.k, f.m)
end
-- A request stamped before the current generation's rotation was delayed in transit (its
-- caller timed out and retried long ago): a late duplicate, not theft. Refuse it, but never
-- revoke for it. A thief's request is stamped when it arrives, after the rotation. Both
-- times are Redis's clock, so instances whose own clocks disagree cannot fake either case.
if stamp < f.t then
  return {'reused_stale'}
end
if policy == 'reject-only' then
  return {'reused_rejected'}
end
f.st = 'r:reuse:' .. b36(now)
redis.call('HSET', KEYS[1], family, encode_family(f))
return {'reused_revoked'}
