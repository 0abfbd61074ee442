# ipw-coordinator (gRPC server) and `ipw` (the operator CLI) in one image.
# Build context: the repository root. Targets:
#   runtime (default)   builds from source in BUILDER_IMAGE:
#       docker build -f deploy/images/coordinator.Dockerfile -t localhost/ipw-coordinator .
#   runtime-prebuilt    copies target/release/{ipw-coordinator,ipw} from the context, so no Rust
#                       image is pulled (build them first on glibc <= the runtime's, e.g. bookworm):
#       cargo build --release --locked -p ipw-coordinator
#       docker build -f deploy/images/coordinator.Dockerfile --target runtime-prebuilt -t localhost/ipw-coordinator .
# BUILDER_IMAGE and RUNTIME_IMAGE take a mirror or an internal registry (--build-arg).
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
# sqlx's query macros read the committed .sqlx/ cache (as .cargo/config.toml says): no database.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p ipw-coordinator \
 && install -D -m 0755 -t /out target/release/ipw-coordinator target/release/ipw

# No ca-certificates: agents and `ipw` trust the coordinator's own CA, and PostgreSQL TLS
# (sqlx with rustls) carries its own roots.
FROM ${RUNTIME_IMAGE} AS base
# A fixed uid, so volumes and secrets can be owned or granted to it from outside.
RUN groupadd --gid 10001 ipw \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/ipw-fleet --no-create-home \
      --shell /usr/sbin/nologin ipw \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/ipw-fleet
# DATA_DIR holds the CA (tls/ca.pem, tls/ca.key) and the admin token made on first start:
# mount a volume there. `ipw` in this image reads both from the same place.
# There is no embedded PostgreSQL in the image: give IPW_DATABASE_URL.
ENV IPW_DATA_DIR=/var/lib/ipw-fleet \
    IPW_LISTEN=0.0.0.0:7443 \
    IPW_METRICS_LISTEN=0.0.0.0:9464
# 7443 gRPC (TLS unless --insecure); 9464 /metrics, /healthz, /readyz.
EXPOSE 7443 9464
WORKDIR /var/lib/ipw-fleet
USER 10001
ENTRYPOINT ["/usr/local/bin/ipw-coordinator"]

FROM base AS runtime-prebuilt
COPY target/release/ipw-coordinator target/release/ipw /usr/local/bin/

# Last, so a plain `docker build` builds from source.
FROM base AS runtime
COPY --from=builder /out/ /usr/local/bin/
