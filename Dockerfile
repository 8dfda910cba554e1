# syntax=docker/dockerfile:1
#
# The onus operator image.
#
# Runtime base: gcr.io/distroless/static-debian12:nonroot rather than scratch. The binary is a
# fully static musl build (rustls + ring, no OpenSSL, no glibc), so either would run it; distroless
# static adds only what scratch lacks and a cluster tool expects: a nonroot user (uid 65532) in
# /etc/passwd, a CA bundle, tzdata and /tmp, for about 2 MB. No shell, no package manager.

FROM rust:1.95-bookworm AS build
# musl-tools: the C compiler ring's assembly and C parts, and jemalloc (the binary's allocator,
# built from source by tikv-jemalloc-sys), are built with for the musl target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
ARG TARGETARCH=amd64
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p onus --bin onus --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/onus" /onus

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /onus /onus
# Numeric, so that runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/onus"]
CMD ["--log-format", "json"]
