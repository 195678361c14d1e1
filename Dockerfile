# The `replay` binary for workers and operators.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked

# The postgres image carries pg_dump/pg_restore of the server's own major
# version, which `replay apply` and `replay emergency-stop` call.
FROM postgres:16-bookworm
RUN useradd --system --create-home replay && mkdir -p /app/backups /app/replay-plans && chown -R replay /app
COPY --from=build /src/target/release/replay /usr/local/bin/replay
USER replay
WORKDIR /app
ENTRYPOINT ["replay"]
CMD ["worker", "--http", "0.0.0.0:9464"]
