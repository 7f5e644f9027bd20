# The token-server image (and, with --target token-gateway, the gateway's): a release build on
# Debian bookworm, copied into distroless (glibc and libgcc, no shell, no package manager),
# running as the non-root user 65532.
#
#   docker build -t token-server:dev .
#   docker run --rm token-server:dev keygen > keyring        # a new signing key
#   docker run --rm -p 50051:50051 -p 9090:9090 --user "$(id -u):$(id -g)" \
#     -v "$PWD/keyring:/etc/token-server/keyring/keyring:ro" \
#     -e TOKEN_KEYRING=/etc/token-server/keyring/keyring \
#     --add-host=host.docker.internal:host-gateway \
#     -e TOKEN_REDIS_URL=redis://host.docker.internal:6379 token-server:dev
#   (--user: the keyring is yours and mode 0600; the image's own user is 65532.)
#
# Kubernetes manifests and the runbook: deploy/README.md.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# protoc comes with the protoc-bin-vendored crate; no system package is needed. The whole
# workspace is copied because Cargo loads every member's manifest (tests/ included), even
# for `-p token-server`; .dockerignore keeps target/, .git, keyrings and deploy/ out.
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit, the default builder
# since Docker 23); the binary is copied out of the cached target/ because cache mounts are not
# part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p token-server -p token-gateway \
 && install -D -m 0755 target/release/token-server /out/token-server \
 && install -D -m 0755 target/release/token-gateway /out/token-gateway

# ---- token-gateway -------------------------------------------------------------------------
# The HTTP gateway has its own runtime stage *above* the token-server stage, so that
# token-server stays the default (last) target; build it with
# `docker build --target token-gateway -t token-gateway:dev .`.
FROM ${RUNTIME_IMAGE} AS token-gateway
LABEL org.opencontainers.image.title="token-gateway" \
      org.opencontainers.image.description="OAuth2 HTTP front door (RFC 6749/7009/7662) for token-server" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/token-gateway /usr/local/bin/token-gateway
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:9091 \
    GATEWAY_TOKEN_SERVICE=http://token-server:50051 \
    RUST_LOG=info
USER 65532:65532
# 8080: the OAuth2 endpoints and /healthz; 9091: GET /metrics.
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/token-gateway"]

# ---- token-server (default target) ---------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS token-server
LABEL org.opencontainers.image.title="token-server" \
      org.opencontainers.image.description="OAuth2 refresh-token rotation over gRPC and Redis" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/token-server /usr/local/bin/token-server
# Inside a container the listeners must not be loopback-only (the binary's defaults are).
# The keyring is not baked in: mount it and point TOKEN_KEYRING at it.
# (DL3064 flags the TOKEN_ prefix as a secret; these are addresses and a log format.)
# hadolint ignore=DL3064
ENV TOKEN_LISTEN=0.0.0.0:50051 \
    TOKEN_ADMIN_LISTEN=0.0.0.0:9090 \
    TOKEN_LOG_FORMAT=json \
    RUST_LOG=info
# 65532 is distroless's `nonroot`; numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 50051: gRPC (tokens.v1, grpc.health.v1, reflection); 9090: GET /metrics.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/token-server"]
