"""Drives the gateway with authlib, an OAuth2 client library nobody here wrote.

Reads one JSON request on stdin, writes one JSON result on stdout; the Rust tests in
tests/tests/gateway.rs run it as a subprocess. Requests:

  {"op": "refresh", "gateway": URL, "client_id": ..., "client_secret": ...,
   "auth": "client_secret_basic" | "client_secret_post" | "none",
   "refresh_token": ..., "scope": "read" (optional)}
      -> {"token": {access_token, token_type, expires_in, refresh_token, scope, expires_at}}
      or {"error": "invalid_grant", "description": ...} when authlib raises OAuthError
  {"op": "parallel_refresh", ... as refresh ..., "threads": 32}
      -> {"results": [one refresh result per thread]}: every thread has its own session and
         all are released together by a barrier
  {"op": "revoke" | "introspect", ..., "token": ..., "token_type_hint": optional}
      -> {"status": HTTP status, "headers": {...}, "body": text}
"""

import json
import os
import sys
import threading

# The gateway under test listens on plain http://127.0.0.1; authlib refuses http:// otherwise.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

from authlib.integrations.requests_client import OAuth2Session, OAuthError  # noqa: E402


def session(req):
    auth = req["auth"]
    return OAuth2Session(
        client_id=req["client_id"],
        client_secret=req.get("client_secret") or None,
        token_endpoint_auth_method=auth,
        revocation_endpoint_auth_method=auth,
        scope=req.get("scope"),
    )


def refresh(req, client=None):
    client = client or session(req)
    try:
        token = client.refresh_token(
            req["gateway"] + "/oauth/token",
            refresh_token=req["refresh_token"],
            timeout=60,
        )
    except OAuthError as err:
        return {"error": err.error, "description": err.description}
    return {"token": dict(token)}


def parallel_refresh(req):
    threads = req["threads"]
    barrier = threading.Barrier(threads)
    results = [None] * threads

    def worker(i):
        # Each thread's session is made before the barrier, so that only the requests race.
        client = session(req)
        barrier.wait()
        results[i] = refresh(req, client)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"results": results}


def response(resp):
    return {"status": resp.status_code, "headers": dict(resp.headers), "body": resp.text}


def revoke(req):
    client = session(req)
    resp = client.revoke_token(
        req["gateway"] + "/oauth/revoke",
        token=req["token"],
        token_type_hint=req.get("token_type_hint"),
        timeout=60,
    )
    return response(resp)


def introspect(req):
    client = session(req)
    resp = client.introspect_token(
        req["gateway"] + "/oauth/introspect",
        token=req["token"],
        token_type_hint=req.get("token_type_hint"),
        timeout=60,
    )
    return response(resp)


OPS = {
    "refresh": refresh,
    "parallel_refresh": parallel_refresh,
    "revoke": revoke,
    "introspect": introspect,
}


def main():
    req = json.load(sys.stdin)
    json.dump(OPS[req["op"]](req), sys.stdout)


if __name__ == "__main__":
    main()
