"""A resource server nobody here wrote: PyJWT (with cryptography for EdDSA) verifying JWT
access tokens with only what the gateway publishes.

Reads one JSON request on stdin, writes one JSON result on stdout; the Rust tests in
tests/tests/jwt_access_tokens.rs run it as a subprocess. Request:

  {"gateway": URL, "issuer": the expected issuer,
   "tokens": [{"token": access token, "audience": the audience expected of it}, ...]}

It fetches the RFC 8414 metadata from the gateway, checks its issuer, fetches the JWK Set
from the metadata's jwks_uri (served by the gateway at that path), and verifies each token as
a resource server would: signature with the key its `kid` names, `alg` EdDSA only, header
`typ` at+jwt (RFC 9068 section 4), `iss`, `aud`, `exp` (and the presence of every claim RFC
9068 requires). Result:

  {"metadata": {...}, "metadata_cache_control": ..., "jwks": {...},
   "jwks_cache_control": ...,
   "results": [{"valid": true, "header": {...}, "claims": {...}}
               | {"valid": false, "error": exception class name}, ...]}
"""

import json
import sys
import urllib.parse

import jwt
import requests

REQUIRED = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]


def fetch(url):
    response = requests.get(url, timeout=60)
    response.raise_for_status()
    return response.json(), response.headers.get("Cache-Control")


def verify(token, jwk_set, issuer, audience):
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            return {"valid": False, "error": "WrongType"}
        key = jwk_set[header["kid"]]
        decoded = jwt.decode_complete(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=issuer,
            options={"require": REQUIRED},
        )
    except (jwt.PyJWTError, KeyError) as err:
        return {"valid": False, "error": type(err).__name__}
    return {"valid": True, "header": decoded["header"], "claims": decoded["payload"]}


def main():
    req = json.load(sys.stdin)
    gateway = req["gateway"]
    metadata, metadata_cache = fetch(gateway + "/.well-known/oauth-authorization-server")
    if metadata["issuer"] != req["issuer"]:
        raise SystemExit(f"metadata issuer {metadata['issuer']!r} is not {req['issuer']!r}")
    # The JWKS from the path the metadata names, on the gateway answering here (the issuer
    # may name a host this test machine does not resolve).
    jwks_path = urllib.parse.urlsplit(metadata["jwks_uri"]).path
    jwks, jwks_cache = fetch(gateway + jwks_path)
    keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
    results = [verify(t["token"], keys, req["issuer"], t["audience"]) for t in req["tokens"]]
    json.dump(
        {
            "metadata": metadata,
            "metadata_cache_control": metadata_cache,
            "jwks": jwks,
            "jwks_cache_control": jwks_cache,
            "results": results,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
