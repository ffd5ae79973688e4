#!/usr/bin/env bash
# `threadchat backup` of a big history while people chat: how long it takes, at what
# throughput, and how much it moves the chat's p99 (it must not stall the sequencer).
#
#   scripts/bench_backup.sh            SIZE_MB=1024 (the history's size), DURATION=30 (seconds of chat each)
#
# 1. A history of SIZE_MB in a fresh data directory: the schema from the server itself,
#    then rows written straight into SQLite by Python (20 rooms, ~400-byte messages).
# 2. The release server on it, caps and rates lifted (the load comes from 127.0.0.1), and
#    `threadchat bench` (200 clients, 20 sending 1,000 msg/s in all, every message stored)
#    twice: alone, then with `threadchat backup` started 5 s in. Prints the backup's time
#    and MB/s and the two p99s.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
SECONDS_EACH=${DURATION:-30}
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet
BIN=target/release/threadchat
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

start() {
  RUST_LOG=warn "$BIN" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --data-dir "$work/data" --max-clients-per-ip 10000 \
    --max-handshakes-per-ip 1024 --upgrade-rate 1000000 --message-rate 1000000 --message-rate-per-ip 1000000 \
    --history-limit 100000000 >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 200); do grep -q "^ws listening" "$work/out" 2>/dev/null && break; sleep 0.05; done
  WS=$(sed -n 's|^ws listening on ws://||p' "$work/out")
}
stop() { kill -INT "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

start
stop
python3 - "$work/data/history.db" "$SIZE_MB" <<'PY'
import sqlite3, sys, time
path, size_mb = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=OFF")
text = ("a chat line of ordinary length, " * 12)[:380]
rows, per_room, t = 0, {}, time.time()
target = size_mb * 1024 * 1024
batch = []
while True:
    for _ in range(100_000):
        room = f"room-{rows % 20}"
        seq = per_room.get(room, 0) + 1
        per_room[room] = seq
        batch.append((room, seq, rows, f"u-{rows % 500}", f"user {rows % 500}", text, 1_700_000_000_000 + rows))
        rows += 1
    db.executemany("INSERT INTO messages (room, seq, client_id, user_id, name, text, ts) VALUES (?,?,?,?,?,?,?)", batch)
    db.commit()
    batch.clear()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    if pages >= target:
        break
print(f"history: {rows} messages, {pages / 2**20:.0f} MiB, written in {time.time() - t:.0f} s", file=sys.stderr)
PY
sync # the generated history's dirty pages, before anything is timed

start
bench() {
  "$BIN" bench "ws://$WS/ws" --clients 200 --senders 20 --rate 1000 --duration-secs "$SECONDS_EACH" --warmup-secs 2 \
    --threads 2 --json --server-pid "$pid" 2>/dev/null
}
alone=$(bench)
bench >"$work/with.json" &
bench_pid=$!
sleep 5
${BACKUP_PREFIX:-} "$BIN" backup --data-dir "$work/data" "$work/backup.db" >"$work/backup.json"
wait "$bench_pid"
stop
python3 - "$alone" "$work/with.json" "$work/backup.json" <<'PY'
import json, sys
alone = json.loads(sys.argv[1])
with_backup = json.load(open(sys.argv[2]))
b = json.load(open(sys.argv[3]))
mb = b["bytes"] / 2**20
print(f"backup: {b['messages']} messages, {mb:.0f} MiB in {b['seconds']:.1f} s ({mb / b['seconds']:.0f} MiB/s)")
print(f"chat p99 alone {alone['latency_p99_ms']:.2f} ms, during the backup {with_backup['latency_p99_ms']:.2f} ms "
      f"(max {alone['latency_max_ms']:.1f} / {with_backup['latency_max_ms']:.1f} ms)")
PY
