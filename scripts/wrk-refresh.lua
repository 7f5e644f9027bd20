-- wrk script for the gateway benchmark (scripts/bench.sh): every request is a real rotation.
--
-- Refresh tokens rotate, so replaying one token would measure grace replays and then
-- refusals. Instead each wrk thread owns a set of token families ("chains"). A request takes
-- a free chain's newest refresh token; its response returns the chain with the refresh token
-- that replaced it. A connection has one request in flight, so with more chains than
-- connections there is always a free chain, and no token is ever sent twice.
--
-- Usage: wrk -t T -c C -s scripts/wrk-refresh.lua http://HOST:PORT -- TOKENS_FILE T
--   TOKENS_FILE (from `token-bench issue`): "<client_id> <client_secret>", then one refresh
--   token a line; thread i takes lines i, i+T, i+2T, ... Give it more than C + T tokens:
--   wrk calls request() once at start-up to inspect the script, which takes a chain whose
--   token is then never sent.
-- The client authenticates with HTTP Basic. Ends with one line:
--   bench gateway: refresh_per_s=... p50_ms=... p99_ms=... non_2xx=... chains_lost=...

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for j = 1, 4 do
      local k = math.floor(n / 64 ^ (4 - j)) % 64
      quad[j] = alphabet:sub(k + 1, k + 1)
    end
    if not b then
      quad[3], quad[4] = "=", "="
    elseif not c then
      quad[4] = "="
    end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

-- Per thread (each thread has its own Lua state).
local free = {}
local headers = {}
lost = 0

function init(args)
  local file = assert(io.open(args[1]), "cannot open the tokens file")
  local nthreads = tonumber(args[2])
  local client_id, secret = file:read("*l"):match("^(%S+) (%S+)$")
  headers["Authorization"] = "Basic " .. base64(client_id .. ":" .. secret)
  headers["Content-Type"] = "application/x-www-form-urlencoded"
  local index = 0
  for token in file:lines() do
    if index % nthreads == id then
      free[#free + 1] = token
    end
    index = index + 1
  end
  file:close()
end

function request()
  -- Never empty with enough chains; if it were, "exhausted" is refused (counted as non-2xx).
  local token = table.remove(free) or "exhausted"
  return wrk.format("POST", "/oauth/token", headers,
    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, _, body)
  local token = status == 200 and body:match('"refresh_token":"([^"]+)"')
  if token then
    free[#free + 1] = token
  else
    -- The old token went out with the request: this chain cannot go on.
    lost = lost + 1
  end
end

function done(summary, latency, _)
  local chains_lost = 0
  for _, thread in ipairs(threads) do
    chains_lost = chains_lost + thread:get("lost")
  end
  local errors = summary.errors
  io.write(string.format(
    "bench gateway: refresh_per_s=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d non_2xx=%d " ..
    "socket_errors=%d chains_lost=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, chains_lost))
end
