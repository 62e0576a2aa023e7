# Multi-stage build: a static-ish release binary on a slim Debian, run as a
# non-root user. Not built on the development machines (no Docker engine
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
EXPOSE 9838
ENTRYPOINT ["/usr/bin/dbcanary"]
CMD ["run"]
