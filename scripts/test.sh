#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the API suite with the real clients
# (gdapi-python, py-consul) from a venv this script creates. Idempotent; needs only Rust and
# python3 on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build"
cargo build

echo "== cargo test"
cargo test --all-targets -- --test-threads 2

VENV=.venv
if [ ! -x "$VENV/bin/pytest" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/api/requirements.txt
fi
echo "== API tests (pytest)"
CORRAL_BIN="$PWD/target/debug/corral" "$VENV/bin/pytest" -q tests/api

echo "== container image"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker build -q -t corral:test .
  cid=$(docker run -d -p 127.0.0.1::9180 corral:test)
  trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
  port=$(docker port "$cid" 9180/tcp | head -1 | sed 's/.*://')
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$port/health" | grep -q ok
  echo "container answered on its control port"
else
  echo "skipped: no Docker daemon here (docker build/run need one)"
fi
