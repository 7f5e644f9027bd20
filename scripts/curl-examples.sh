#!/usr/bin/env bash
# curl walk-through of the HTTP gateway (OAuth2: RFC 6749 refresh, RFC 7009 revoke, RFC 7662
# introspect). grpcurl registers a client and starts a token family on the token service; curl
# does the rest through the gateway. Run it as it is, or paste its lines. The addresses come
# from TOKEN_ADDR (the token service) and GATEWAY_ADDR (the gateway); defaults below. The two
# grpcurl calls are operator RPCs: they present the credential `make run` created in
# .dev/operator-credential (or TOKEN_OPERATOR_CREDENTIAL).
set -euo pipefail
GRPC="${TOKEN_ADDR:-127.0.0.1:50051}"
OPERATOR="${TOKEN_OPERATOR_CREDENTIAL:-$(cat "$(dirname "$0")/../.dev/operator-credential" 2>/dev/null || true)}"
AS_OPERATOR=(-H "authorization: Bearer $OPERATOR")
GATEWAY="http://${GATEWAY_ADDR:-127.0.0.1:8080}"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# A confidential client (it gets a secret, shown once) allowed the scopes read and write.
CREATED=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d '{"client_type":"confidential","allowed_scopes":["read","write"]}' \
  "$GRPC" tokens.v1.ClientRegistry/CreateClient)
CLIENT=$(json clientId <<<"$CREATED")
SECRET=$(json clientSecret <<<"$CREATED")
echo "client: $CLIENT"

# The first pair of a new family for alice (issuing is not an OAuth grant here: gRPC only).
RT=$(grpcurl -plaintext "${AS_OPERATOR[@]}" -d "{\"client_id\":\"$CLIENT\",\"subject\":\"alice\"}" \
  "$GRPC" tokens.v1.TokenService/IssueTokenPair | json refreshToken)

# Refresh, the client authenticating with HTTP Basic: a new pair.
PAIR=$(curl -sS -u "$CLIENT:$SECRET" -d grant_type=refresh_token -d "refresh_token=$RT" \
  "$GATEWAY/oauth/token")
echo "$PAIR"
# The same refresh again (as after a lost response), credentials in the body this time: the
# same pair, not a second rotation.
curl -sS -d grant_type=refresh_token -d "refresh_token=$RT" \
  -d "client_id=$CLIENT" -d "client_secret=$SECRET" "$GATEWAY/oauth/token"; echo
RT=$(json refresh_token <<<"$PAIR")
AT=$(json access_token <<<"$PAIR")

# Introspect the access token (any confidential client may; a resource server would use its own).
curl -sS -u "$CLIENT:$SECRET" -d "token=$AT" "$GATEWAY/oauth/introspect"; echo
# Revoke the refresh token: the whole family ends, so the access token is inactive too.
curl -sS -u "$CLIENT:$SECRET" -d "token=$RT" -d token_type_hint=refresh_token \
  -w 'revoke: HTTP %{http_code}\n' "$GATEWAY/oauth/revoke"
curl -sS -u "$CLIENT:$SECRET" -d "token=$AT" "$GATEWAY/oauth/introspect"; echo
# A refresh with the revoked token is refused: 400 invalid_grant.
curl -sS -u "$CLIENT:$SECRET" -d grant_type=refresh_token -d "refresh_token=$RT" \
  -w '\nHTTP %{http_code}\n' "$GATEWAY/oauth/token"

# What a resource server verifying JWT access tokens (clients registered with
# access_token_format "jwt") fetches: the public keys and the RFC 8414 metadata.
curl -sS "$GATEWAY/.well-known/jwks.json"; echo
curl -sS "$GATEWAY/.well-known/oauth-authorization-server"; echo

curl -sS "$GATEWAY/healthz"; echo
