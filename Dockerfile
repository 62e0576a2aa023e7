# Multi-stage build: the release binary on a slim Debian, run as a non-root
# user. Not built on the development machines (no Docker engine
# there); the binary it builds is the one the test suite exercises.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/dbcanary

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home dbcanary
COPY --from=build /src/target/release/dbcanary /usr/bin/dbcanary
COPY config/dbcanary.example.toml /etc/dbcanary/dbcanary.example.toml
USER 10001
ENV DBCANARY__AGENT__LISTEN=0.0.0.0:9838
# As the systemd unit: big freed buffers go back to the system.
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304
EXPOSE 9838
# No curl in the slim image: bash's /dev/tcp asks /healthz.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9838 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/bin/dbcanary"]
CMD ["run"]
