#!/usr/bin/env bash
# What the release profile's SQLite optimisation level costs (Cargo.toml sets -O2 for
# libsqlite3-sys, to keep a clean release build under 90 s): the same server built with
# SQLite at -O3 (cargo's release default) and as configured, alternating, three rounds, on a
# load where the store is on the hot path — 20 clients all sending as fast as their window
# allows, --sync-commit off so that CPU, not fsync, bounds it.
#
#   scripts/bench_store_ab.sh        prints stored messages/s and server CPU per 1k deliveries
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo build --release --quiet --target-dir target/sqlite-o3 --config 'profile.release.package.libsqlite3-sys.opt-level=3'
run() { # run BIN LABEL
  local d
  d=$(mktemp -d)
  RUST_LOG=warn "$1" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --data-dir "$d" --sync-commit off \
    --message-rate 1000000 --message-rate-per-ip 1000000 --upgrade-rate 1000000 --max-clients-per-ip 10000 --max-handshakes-per-ip 1024 \
    >"$d/out" 2>"$d/err" &
  local pid=$! i
  for i in $(seq 50); do [ "$(wc -l <"$d/out")" -ge 2 ] && break; sleep 0.1; done
  local ws
  ws=$(sed -n 's|^ws listening on ||p' "$d/out")
  target/release/threadchat bench "$ws/ws" --clients 20 --senders 20 --rate 0 --window 32 --duration-secs 8 \
    --server-pid "$pid" --json 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%-22s stored/s %6.0f   server CPU per 1k deliveries %.3f ms   p99 %.1f ms" % (
    sys.argv[1], r["sent"] / r["duration_secs"], r["server_cpu_ms_per_1k_deliveries"], r["latency_p99_ms"]))' "$2"
  kill -INT "$pid"
  wait "$pid" || true
  rm -rf "$d"
}
for round in 1 2 3; do
  run target/release/threadchat "as configured"
  run target/sqlite-o3/release/threadchat "SQLite at -O3"
done
