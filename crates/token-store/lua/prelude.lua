-- Prepended to every script of this folder by scripts.rs (Redis scripts cannot import), so
-- the checks they share are written once. Locals only: Redis forbids script globals.

-- A non-negative whole number written in plain digits, or nil: fractions, exponents and
-- signs are refused before anything is written (a later PEXPIRE would fail mid-script).
local function whole(v)
  if type(v) == 'string' and string.match(v, '^%d+$') then
    return tonumber(v)
  end
  return nil
end

