#!/usr/bin/env bash
# Hostile traffic comparison (issue 8): runs the raw cases of tests/common/raw.rs against corral
# and, when installed, HAProxy and nginx with equivalent minimal configs on 127.0.0.1, prints a
# table (case -> rejected / forwarded / forwarded-unsafe / DESYNC / hang per proxy), then
# measures corral's RSS with 10,000 idle keep-alive connections (IDLE=N to change).
#   scripts/hostile.sh            # needs cargo; haproxy and nginx optional
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-10000}
# Client and proxy are separate processes: each holds IDLE sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n); $((IDLE + 1000)) needed for IDLE=$IDLE" >&2
  exit 1
fi

cargo build --quiet --bin corral --example hostile
TARGET=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

read -r BACKEND CORRAL HAPROXY NGINX CONTROL < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

cat >"$WORK/corral.json" <<JSON
{"loadBalancers":[{"name":"lb","lbConfig":{"portRules":[{"sourcePort":$CORRAL,"serviceId":"raw"}]}}],
 "services":[{"ID":"raw1","Service":"raw","Address":"127.0.0.1","Port":$BACKEND}],
 "timeouts":{"upstreamResponse":2000},
 "limits":{"maxConnectionsPerListener":$((IDLE + 100))}}
JSON
(cd "$WORK" && exec "$TARGET/debug/corral" --config corral.json --data-dir state \
  --listen-ip 127.0.0.1 --control-addr "127.0.0.1:$CONTROL" 2>"$WORK/corral.log") &
CORRAL_PID=$!
PIDS+=("$CORRAL_PID")
wait_port "$CORRAL"
PROXIES=("corral=$CORRAL")

if command -v haproxy >/dev/null; then
  cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 9000
defaults
  mode http
  timeout connect 3s
  timeout client 10s
  timeout server 2s
  timeout http-request 10s
frontend fe
  bind 127.0.0.1:$HAPROXY
  default_backend be
backend be
  server raw 127.0.0.1:$BACKEND
CFG
  haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  PIDS+=($!)
  wait_port "$HAPROXY" && PROXIES+=("haproxy=$HAPROXY")
  echo "haproxy: $(haproxy -v | head -1)" >&2
else
  echo "haproxy not installed; skipped" >&2
fi

if command -v nginx >/dev/null; then
  mkdir -p "$WORK/nginx/logs"
  cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 16; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 2s;
    }
  }
}
CFG
  nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/stderr" &
  PIDS+=($!)
  wait_port "$NGINX" && PROXIES+=("nginx=$NGINX")
  echo "nginx: $(nginx -v 2>&1)" >&2
else
  echo "nginx not installed; skipped" >&2
fi

"$TARGET/debug/examples/hostile" cases --backend "$BACKEND" "${PROXIES[@]}"
echo
"$TARGET/debug/examples/hostile" idle --backend "$BACKEND" --pid "$CORRAL_PID" \
  --count "$IDLE" "corral=$CORRAL"
