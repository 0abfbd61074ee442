# ipw-agent. The engine (llama-server, vLLM, ...) is a separate container or host process.
# Build context: the repository root. Targets:
#   runtime (default)   builds from source in BUILDER_IMAGE:
#       docker build -f deploy/images/agent.Dockerfile -t localhost/ipw-agent .
#   runtime-prebuilt    copies target/release/ipw-agent from the context, so no Rust image is
#                       pulled (build it first on glibc <= the runtime's, e.g. bookworm):
#       cargo build --release --locked -p ipw-agent
#       docker build -f deploy/images/agent.Dockerfile --target runtime-prebuilt -t localhost/ipw-agent .
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
# git: agent/build.rs records the revision in every run's provenance ("unknown" without it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p ipw-agent \
 && install -D -m 0755 -t /out target/release/ipw-agent

# No ca-certificates: the agent pins the coordinator's CA by fingerprint and speaks plain HTTP
# to its engine.
FROM ${RUNTIME_IMAGE} AS base
RUN groupadd --gid 10001 ipw \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/ipw-agent --no-create-home \
      --shell /usr/sbin/nologin ipw \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/ipw-agent
# Credential and spool on one volume: a restarted container keeps its identity and re-sends
# what the coordinator has not acknowledged.
ENV IPW_AGENT_CONFIG=/var/lib/ipw-agent/agent.json \
    IPW_SPOOL_DIR=/var/lib/ipw-agent/spool \
    IPW_METRICS_LISTEN=0.0.0.0:9465
# 9465 /metrics, /healthz, /readyz.
EXPOSE 9465
WORKDIR /var/lib/ipw-agent
USER 10001
# On SIGTERM the agent drains for up to --shutdown-grace (30 s): stop it with a longer timeout
# (docker stop -t 90, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ipw-agent"]
CMD ["run"]

FROM base AS runtime-prebuilt
COPY target/release/ipw-agent /usr/local/bin/

FROM base AS runtime
COPY --from=builder /out/ /usr/local/bin/
