#!/usr/bin/env bash
# Runs every test threadchat has, installing what they need on a fresh machine:
#   1. cargo tests (unit + integration over real sockets, the real binary included)
#   2. scripts/smoke.sh (curl + the binary)
#   3. the browser test (headless Debian Chromium driven by playwright-core)
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt curl chromium
command -v node >/dev/null && command -v npm >/dev/null || ensure_apt nodejs npm

echo "== cargo test"
cargo build --locked
cargo test --locked

echo "== smoke"
BIN=target/debug/threadchat scripts/smoke.sh

echo "== browser"
(
  cd tests/browser
  npm ci --no-audit --no-fund --loglevel=error
  THREADCHAT_BIN="$PWD/../../target/debug/threadchat" node --test
)

echo "stages: 3 passed, 0 failed"
