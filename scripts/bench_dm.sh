#!/usr/bin/env bash
# Direct messages at 10,000 clients: dms/s, and a room's p99 beside them, for the work
# tree and an earlier revision (default: 4f0abda, before dms were delivered by user id,
# when each dm scanned every connected client under the hub lock), alternating.
#
#   scripts/bench_dm.sh [REV]          ROUNDS=3 by default; CLIENTS=10000 DURATION=10 (seconds each)
#
# Each run: a fresh server (release build, caps and rates lifted: the load comes from
# 127.0.0.x), `threadchat bench` holding CLIENTS idle chat clients, then
# scripts/bench_dm.py twice: the room probe alone (baseline), then with a dm sender keeping
# 64 dms in flight. Prints one line per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
REV=${1:-4f0abda}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-10000}
SECONDS_EACH=${DURATION:-10}
ulimit -n "$(ulimit -Hn)"

build_ab "$REV"

# run BIN: prints "baseline_p99 dms_per_sec p99_with_dms".
run() {
  local bin=$1 work pid ws http holder base with
  work=$(mktemp -d)
  RUST_LOG=warn "$bin" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --max-clients $((CLIENTS + 100)) \
    --max-clients-per-ip $((CLIENTS + 100)) --max-handshakes-per-ip 1024 --upgrade-rate 1000000 \
    --message-rate 1000000 --message-rate-per-ip 1000000 --data-dir "$work/data" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 200); do grep -q "^ws listening" "$work/out" && break; sleep 0.05; done
  ws=$(sed -n 's|^ws listening on ws://||p' "$work/out")
  http=$(sed -n 's|^http listening on http://||p' "$work/out")
  "$NEW" bench "ws://$ws/ws" --clients "$CLIENTS" --senders 0 --duration-secs 600 --threads 2 >/dev/null 2>&1 &
  holder=$!
  for _ in $(seq 1 1200); do
    n=$(curl -s "http://$http/metrics" | sed -n 's/^threadchat_clients{endpoint="chat"} //p')
    [ "${n:-0}" -ge "$CLIENTS" ] && break
    sleep 0.1
  done
  base=$(python3 scripts/bench_dm.py "$ws" --seconds "$SECONDS_EACH" --no-dms)
  with=$(python3 scripts/bench_dm.py "$ws" --seconds "$SECONDS_EACH")
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  python3 - "$base" "$with" <<'PY'
import json, sys
b, w = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(b["probe_p99_ms"], w["dms_per_sec"], w["probe_p99_ms"], w["dm_errors"])
PY
  sleep 1
}

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    figures=$(run "$bin")
    echo "round $round $which ($CLIENTS idle clients): room p99 alone, dms/s, room p99 beside the dms, dm errors: $figures"
    results[$which]+="$figures;"
  done
done
python3 - "${results[old]}" "${results[new]}" "$REV" <<'PY'
import statistics, sys
def cols(s):
    rows = [list(map(float, r.split())) for r in s.strip(";").split(";")]
    return [statistics.median(c) for c in zip(*rows)]
old, new, rev = cols(sys.argv[1]), cols(sys.argv[2]), sys.argv[3]
for i, what in enumerate(["room p99 alone (ms)", "dms/s", "room p99 beside the dms (ms)"]):
    print(f"{what}: {rev} {old[i]:g}, work tree {new[i]:g}, ratio {new[i] / old[i]:.2f}")
PY
