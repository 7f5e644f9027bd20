#!/usr/bin/env bash
# grpcurl walk-through of the token service: register a client, start a token family,
# refresh it, see a grace replay, introspect and revoke; then a client with JWT access tokens
# and the public keys that verify them. `make run` prints this file; run it
# as it is, or paste its lines. The server address comes from TOKEN_ADDR (default below).
# Operator RPCs (ClientRegistry, IssueTokenPair, ListRefreshEvents, SummarizeRefreshEvents,
# ListSubjectSessions, RevokeSubjectSessions)
# present the operator credential that `make run` created in .dev/operator-credential (or
# TOKEN_OPERATOR_CREDENTIAL), which the server's operator policy names by its SHA-256.
set -euo pipefail
ADDR="${TOKEN_ADDR:-127.0.0.1:50051}"
OPERATOR="${TOKEN_OPERATOR_CREDENTIAL:-$(cat "$(dirname "$0")/../.dev/operator-credential" 2>/dev/null || true)}"
AS_OPERATOR=(-H "authorization: Bearer $OPERATOR")
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

grpcurl -plaintext "$ADDR" list
grpcurl -plaintext "$ADDR" describe tokens.v1.TokenService

# A public client (no secret) allowed the scopes read and write.
CLIENT=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d '{"client_type":"public","allowed_scopes":["read","write"]}' \
  "$ADDR" tokens.v1.ClientRegistry/CreateClient | json clientId)
echo "client: $CLIENT"

# The first pair of a new family for alice.
RT=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$CLIENT\",\"subject\":\"alice\",\"scopes\":[\"read\"]}" \
  "$ADDR" tokens.v1.TokenService/IssueTokenPair | json refreshToken)

# Refresh: a new pair. The same refresh again (a lost response, retried) replays that pair.
grpcurl -plaintext -d "{\"client_id\":\"$CLIENT\",\"refresh_token\":\"$RT\"}" \
  "$ADDR" tokens.v1.TokenService/RefreshTokenPair
grpcurl -plaintext -d "{\"client_id\":\"$CLIENT\",\"refresh_token\":\"$RT\"}" \
  "$ADDR" tokens.v1.TokenService/RefreshTokenPair

# -emit-defaults prints "active": false too (proto3 JSON omits default values otherwise).
grpcurl -plaintext -emit-defaults -d "{\"token\":\"$RT\"}" "$ADDR" tokens.v1.TokenService/IntrospectToken
grpcurl -plaintext -d "{\"client_id\":\"$CLIENT\",\"token\":\"$RT\"}" \
  "$ADDR" tokens.v1.TokenService/RevokeToken
grpcurl -plaintext -emit-defaults -d "{\"token\":\"$RT\"}" "$ADDR" tokens.v1.TokenService/IntrospectToken

# The client's refresh audit, newest first (filter with "outcomes", "since", "until"), and its
# outcome counts over the last hour.
grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$CLIENT\",\"page_size\":10}" \
  "$ADDR" tokens.v1.TokenService/ListRefreshEvents
grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$CLIENT\",\"window\":\"3600s\"}" \
  "$ADDR" tokens.v1.TokenService/SummarizeRefreshEvents

# alice signs in again: a new family, one session. Her active sessions, newest first (the
# family revoked above is not one): family id, client, scopes, issue and last refresh time,
# generation. Filter with "client_id"; page with "page_size" and "page_token".
RT2=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$CLIENT\",\"subject\":\"alice\"}" \
  "$ADDR" tokens.v1.TokenService/IssueTokenPair | json refreshToken)
grpcurl -plaintext "${AS_OPERATOR[@]}" -d '{"subject":"alice","page_size":10}' \
  "$ADDR" tokens.v1.TokenService/ListSubjectSessions
# Log alice out everywhere ("client_id" narrows it to one client): every session of hers
# issued until now is revoked, and the answer counts them. Her refresh token is then refused
# with TOKEN_REVOKED (grpcurl prints the ErrorInfo and exits non-zero).
grpcurl -plaintext "${AS_OPERATOR[@]}" -d '{"subject":"alice"}' \
  "$ADDR" tokens.v1.TokenService/RevokeSubjectSessions
if grpcurl -plaintext -d "{\"client_id\":\"$CLIENT\",\"refresh_token\":\"$RT2\"}" \
  "$ADDR" tokens.v1.TokenService/RefreshTokenPair 2>&1; then
  echo "unexpected: the refresh succeeded" >&2
  exit 1
fi
grpcurl -plaintext "${AS_OPERATOR[@]}" -d '{"subject":"alice"}' \
  "$ADDR" tokens.v1.TokenService/ListSubjectSessions

# A client whose access tokens are RFC 9068 JWTs, which resource servers verify with the
# public keys GetJwks returns (the gateway serves them at /.well-known/jwks.json).
JWT_CLIENT=$(grpcurl -plaintext "${AS_OPERATOR[@]}" \
  -d '{"client_type":"public","allowed_scopes":["read"],"access_token_format":"jwt"}' \
  "$ADDR" tokens.v1.ClientRegistry/CreateClient | json clientId)
AT_JWT=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$JWT_CLIENT\",\"subject\":\"bob\"}" \
  "$ADDR" tokens.v1.TokenService/IssueTokenPair | json accessToken)
echo "jwt access token: $AT_JWT"
grpcurl -plaintext "$ADDR" tokens.v1.TokenService/GetJwks

grpcurl -plaintext "$ADDR" grpc.health.v1.Health/Check
