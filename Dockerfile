# syntax=docker/dockerfile:1
# Berry's container image: one image holding every Berry program, run with the program as the
# command (no entrypoint wrapper, no shell needed at run time):
#   docker run --rm ghcr.io/berry-lb/berry:0.1.0 berry-proxy --help
# Programs (all in /usr/local/bin): berry-proxy, berry-control-plane, berryctl, berry-routes and
# berry-mock-upstream (the mock OpenAI provider of the demo setups).
# Build: docker build -t ghcr.io/berry-lb/berry:0.1.0 .
# tests/deploy/image checks that the runtime stage installs a package for every shared library
# the built programs load.

ARG DEBIAN_RELEASE=bookworm

# ---- build: the same Debian packages as a developer machine, then a Release build ----------
FROM debian:${DEBIAN_RELEASE} AS build
# scripts/install-deps is the one list of build packages; --build-only leaves out the test tools.
COPY scripts/install-deps /usr/local/sbin/berry-install-deps
RUN /usr/local/sbin/berry-install-deps --build-only && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads: edits to docs, deploy files or tests do not invalidate this layer.
COPY CMakeLists.txt ./
COPY proto/ proto/
COPY common/ common/
COPY control-plane/ control-plane/
COPY data-plane/ data-plane/
COPY tests/support/ tests/support/
# Parallel compile jobs; 0 = one per available core.
ARG BUILD_JOBS=0
# berry-mock-upstream lives in tests/support and is built even with the test suite off.
RUN set -eu; \
    jobs="${BUILD_JOBS}"; [ "$jobs" != 0 ] || jobs="$(nproc)"; \
    cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release \
          -DBERRY_BUILD_TESTS=OFF -DBERRY_BUILD_BENCH=OFF; \
    cmake --build build/release -j"$jobs" --target \
          berry-proxy berry-control-plane berryctl berry-routes berry-mock-upstream; \
    install -m 0755 -s \
          build/release/data-plane/berry-proxy \
          build/release/control-plane/berry-control-plane \
          build/release/control-plane/berryctl \
          build/release/control-plane/berry-routes \
          build/release/tests/support/berry-mock-upstream \
          /usr/local/bin/; \
    /usr/local/bin/berry-proxy --help >/dev/null; \
    /usr/local/bin/berryctl --help >/dev/null

# ---- runtime: Debian slim with only the shared libraries the programs load -----------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Berry" \
      org.opencontainers.image.description="OpenAI-compatible load balancer for AI providers: gRPC control plane (berry-control-plane, berryctl) and stateless data-plane proxies (berry-proxy)" \
      org.opencontainers.image.source="https://github.com/berry-lb/berry" \
      org.opencontainers.image.url="https://github.com/berry-lb/berry" \
      org.opencontainers.image.vendor="Berry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"

# One package per shared library the programs need (tests/deploy/image keeps this list
# complete); libc6, libstdc++6 and libgcc-s1 are already part of debian:bookworm-slim.
# ca-certificates: the system trust store for HTTPS providers.
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        libabsl20220623 \
        libboost-json1.81.0 \
        libboost-url1.81.0 \
        libgrpc++1.51 \
        libgrpc29 \
        libprometheus-cpp-core1.0 \
        libprotobuf32 \
        libssl3 \
        libtomlplusplus3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/* /var/log/apt /var/log/dpkg.log \
    && install -d -o 65532 -g 65532 -m 0700 /var/lib/berry
# /var/lib/berry: berry-proxy's --state-dir, owned by the run-time user so that a volume mounted
# there (compose) starts with the right owner; Kubernetes mounts an emptyDir over it.

COPY --from=build \
    /usr/local/bin/berry-proxy \
    /usr/local/bin/berry-control-plane \
    /usr/local/bin/berryctl \
    /usr/local/bin/berry-routes \
    /usr/local/bin/berry-mock-upstream \
    /usr/local/bin/

# 8080: berry-proxy HTTP (API, /healthz, /readyz, /metrics); 9090: berry-control-plane HTTP
# (/healthz, /readyz, /metrics, /proxies, /backends); 50051: berry-control-plane gRPC.
EXPOSE 8080 9090 50051
USER 65532:65532
# Fits berry-proxy, the usual command; a control plane overrides it (compose) or uses
# Kubernetes probes instead (Docker's HEALTHCHECK is ignored there). Exec form: no shell.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["berryctl", "probe", "http://127.0.0.1:8080/readyz"]
CMD ["berry-proxy", "--help"]
