-- The refresh state machine (DESIGN.md): compare the presented generation p with the stored
-- generation g and rotate, replay, roll forward or refuse, all in one atomic step.
-- KEYS[1]: the family hash
-- ARGV[1]: presented generation p (>= 1)
-- ARGV[2]: id of the authenticated client
-- ARGV[3]: now, ms since the epoch
-- ARGV[4]: grace period, ms (0 turns replays off)
-- ARGV[5]: idle TTL, ms
-- ARGV[6]: id of the key that signs a new generation
-- ARGV[7]: reuse policy: "revoke-family" or "reject-only"
-- Needs: prelude.lua (whole), prepended at load time.
-- Returns: {outcome} for refusals: "expired", "revoked", "client_mismatch",
--          "reused_revoked" (family revoked now), "reused_rejected" (family kept);
--          {outcome, g, t, key id, scopes, absolute expiry} for "rotated", "replayed" and
--          "rolled_forward", describing the generation whose pair the caller gets.
local p = whole(ARGV[1])
local now = whole(ARGV[3])
local grace = whole(ARGV[4])
local idle_ttl = whole(ARGV[5])
local policy = ARGV[7]
if not p or p < 1 or not now or not grace
    or not idle_ttl or idle_ttl <= 0 or ARGV[2] == '' or ARGV[6] == ''
    or (policy ~= 'revoke-family' and policy ~= 'reject-only') then
  return redis.error_reply('ERR rotate: invalid arguments')
end

local f = redis.call('HMGET', KEYS[1], 'c', 'g', 't', 'k', 'st', 'x', 'sc')
if not f[1] then
  return {'expired'}
end
local g, t, absolute_expiry = tonumber(f[2]), tonumber(f[3]), tonumber(f[6])
if now >= absolute_expiry or now >= t + idle_ttl then
  return {'expired'}
end
if f[5] ~= 'a' then
  return {'revoked'}
end
if f[1] ~= ARGV[2] then
  return {'client_mismatch'}
end

-- Numbers go back as integer strings: tostring() would print large ones in exponent form.
local function int(n)
  return string.format('%.0f', n)
end
local function issued(outcome, generation, rotated_at, key_id)
  return {outcome, int(generation), int(rotated_at), key_id, f[7], int(absolute_expiry)}
end
local function advance(outcome, generation)
  redis.call('HSET', KEYS[1], 'g', int(generation), 't', int(now), 'k', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], math.min(idle_ttl, absolute_expiry - now))
  return issued(outcome, generation, now, ARGV[6])
end

if p == g then
  return advance('rotated', g + 1)
end
if p > g then
  -- Only we can mint a newer generation, so the store lost a write (failover): move past it.
  return advance('rolled_forward', p + 1)
end
if p == g - 1 and grace > 0 and now - t <= grace then
  return issued('replayed', g, t, f[4])
end
if policy == 'reject-only' then
  return {'reused_rejected'}
end
redis.call('HSET', KEYS[1], 'st', 'r', 'rr', 'reuse', 'rt', int(now))
return {'reused_revoked'}
