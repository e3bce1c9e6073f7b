#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the API suite with the real clients
# (gdapi-python, py-consul) from a venv this script creates. Idempotent; needs only Rust and
# python3 on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: protoc builds the etcd client's generated code; etcd runs the replica tests
# (tests/api/test_replicas.py skips itself when etcd cannot be had).
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server etcd-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; }; then
    echo "warning: could not install ${missing[*]}" >&2
  fi
fi

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
