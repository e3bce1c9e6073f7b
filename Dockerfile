# corral as a load-balancer container.
#   docker build -t corral .
#   docker run -p 9180:9180 -p 80:80 -e CORRAL_ACCESS_KEY=ak -e CORRAL_SECRET_KEY=sk corral

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin protobuf-compiler \
 && cargo build --release --locked --features etcd --bin corral \
 && setcap cap_net_bind_service=+ep target/release/corral

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin corral \
 && mkdir -p /data && chown corral /data
# cp keeps the file capability set above (ports below 1024 without root).
COPY --from=build --chown=root:root /src/target/release/corral /usr/local/bin/corral
USER corral
ENV CORRAL_CONTROL_ADDR=0.0.0.0:9180 \
    CORRAL_DATA_DIR=/data \
    CORRAL_LOG_FORMAT=json
VOLUME /data
EXPOSE 9180
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/corral"]
