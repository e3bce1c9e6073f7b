#!/usr/bin/env bash
# Side-by-side benchmark of corral, HAProxy and nginx (issue 9).
#
#   scripts/bench.sh                       # 3 repeats x 10 s per scenario and system
#   BENCH_SECONDS=3 BENCH_REPEATS=1 scripts/bench.sh          # quick look while developing
#   BENCH_SCENARIOS=h1-ka-100,h2-tls BENCH_SYSTEMS=corral,haproxy scripts/bench.sh
#   BENCH_NO_WAIT=1 scripts/bench.sh       # do not wait for the machine to quiet down
#
# Core 1 runs the proxy under test (one worker each; corral with --worker-threads 1, a
# current-thread runtime); core 0 runs the load generator and the nginx backends. Traffic goes
# only to 127.0.0.1, every run is bounded in time. Results: bench/results/<stamp>/ (results.md,
# results.json, ratios.png), ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v ab >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
fi
# Debian starts the packaged services on install; the benchmark runs its own instances.
for svc in nginx haproxy; do
  if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done

# matplotlib for the chart, in a venv of its own (not the test suite's).
VENV="${CARGO_TARGET_DIR:-target}/bench-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'matplotlib>=3.7,<4'
fi

cargo build --release --bin corral
BIN="${CARGO_TARGET_DIR:-target}/release/corral"

# 9,000 idle connections need the descriptors (the hard limit here is 20,000, which caps
# HAProxy at maxconn 9,800: it reserves two descriptors per connection).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec "$VENV/bin/python" scripts/bench/bench.py --corral "$BIN" "$@"
