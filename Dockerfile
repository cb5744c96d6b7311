# Builds the `tidings` binary and, by default, runs the example receiver on port 9999:
#   docker build -t tidings .
#   docker run --rm -p 9999:9999 -e TIDINGS_RECEIVER_SECRET=whsec_... tidings
# The same image runs any other `tidings` command given after the image name.

# Build stage. Pinned to bookworm so the binary links against the runtime stage's glibc.
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --bin tidings

# Runtime stage: the binary only, run as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home tidings
COPY --from=builder /src/target/release/tidings /usr/local/bin/tidings
USER tidings
ENV TIDINGS_RECEIVER_LISTEN=0.0.0.0:9999 \
    RUST_LOG=info
EXPOSE 9999
ENTRYPOINT ["tidings"]
CMD ["receiver"]
