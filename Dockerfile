# The HTTP server (modelhost-serve, src/bin/modelhost-serve/) in a slim image.
#   docker build -t modelhost-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models-repo:/models:ro" modelhost-serve
# /models is a model repository, NAME/VERSION/ (see scripts/model-repo.sh and the README).

# The toolchain this project is built and tested with (cargo 1.95).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
COPY benches benches
RUN cargo build --release --locked --features server --bin modelhost-serve \
    && cp target/release/modelhost-serve /usr/local/bin/modelhost-serve

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin modelhost
COPY --from=build /usr/local/bin/modelhost-serve /usr/local/bin/modelhost-serve
USER 10001
EXPOSE 8000
# SIGTERM drains the requests in flight and exits 0 (docker stop, Kubernetes).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/modelhost-serve"]
CMD ["--models", "/models", "--addr", "0.0.0.0:8000"]
