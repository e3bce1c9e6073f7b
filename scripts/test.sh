#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the API suite with the real clients
# (gdapi-python, py-consul) from a venv this script creates. Idempotent; needs only Rust and
# python3 on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: protoc builds the etcd client's generated code; etcd runs the replica tests
# (tests/api/test_replicas.py skips itself when etcd cannot be had).
missing=()
# jemalloc, the binary's allocator, is built from source with make (gcc is Rust's linker here).
command -v make >/dev/null || missing+=(make)
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

# Every feature, so the etcd backend is built and tested too (without protoc, the default
# features: the replica tests then skip themselves).
FEATURES=()
command -v protoc >/dev/null && FEATURES=(--features etcd)

echo "== cargo build ${FEATURES[*]}"
cargo build "${FEATURES[@]}"

echo "== cargo test"
# Every target compiles (benches included); the criterion benches are not run as tests: their
# harness takes none of libtest's flags.
cargo test "${FEATURES[@]}" --all-targets --no-run
cargo test "${FEATURES[@]}" --lib --bins --tests --examples -- --test-threads 2

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
# Cheap when satisfied; keeps a reused venv in step with requirements.txt.
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/api/requirements.txt
echo "== API tests (pytest)"
CORRAL_FEATURES="${FEATURES[1]:-}" CORRAL_BIN="$PWD/target/debug/corral" "$VENV/bin/pytest" -q tests/api

# The status page in a real browser: Debian's chromium driven by playwright-core from npm.
# Installs both when missing (idempotent); skipped, with the reason, when they cannot be had.
browser_test() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "skipped: node/npm not available"
    return 0
  fi
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing chromium"
      if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        echo "skipped: chromium cannot be installed"
        return 0
      fi
    else
      echo "skipped: /usr/bin/chromium missing and apt-get not usable"
      return 0
    fi
  fi
  if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    if ! (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error); then
      echo "skipped: playwright-core cannot be installed"
      return 0
    fi
  fi
  CORRAL_BIN="$PWD/target/debug/corral" node tests/browser/status.mjs
}
echo "== browser test (status page)"
browser_test

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
