-- Test only: the prelude's family record codec, called directly, so that family_record.rs can
-- be checked against the one definition of the format (encode_family / decode_family).
-- KEYS: none
-- ARGV[1]: "encode" or "decode"
-- encode: ARGV[2..10]: generation, access mask ('' for none), rotated at (ms), key id,
--         issued at (ms), absolute expiry (ms), status (as the record holds it), client id,
--         scope mask (hex)
-- decode: ARGV[2]: a record
-- Needs: prelude.lua (int, decode_family, encode_family), prepended at load time.
-- Returns: encode: the record; decode: the nine fields as encode takes them, or the
--          prelude's error for a record it cannot read.
if ARGV[1] == 'encode' then
  return encode_family({g = tonumber(ARGV[2]), m = ARGV[3], t = tonumber(ARGV[4]), k = ARGV[5],
    i = tonumber(ARGV[6]), x = tonumber(ARGV[7]), st = ARGV[8], c = ARGV[9], sc = ARGV[10]})
end
if ARGV[1] == 'decode' then
  local f = decode_family(ARGV[2])
  if f.err then
    return f
  end
  return {int(f.g), f.m, int(f.t), f.k, int(f.i), int(f.x), f.st, f.c, f.sc}
end
return redis.error_reply('ERR record_codec: the mode is encode or decode')
