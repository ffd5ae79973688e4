#!/usr/bin/env bash
# A/B benchmark: the work tree against an earlier revision, alternating, on the two figures
# a change to the way in can move — handshakes per second (64 concurrent connect → upgrade →
# drop loops on /echo) and resident memory per idle client (10,000 chat clients).
#
#   scripts/bench_ab.sh REV            e.g. scripts/bench_ab.sh 3d42e8b (three rounds)
#   ROUNDS=5 scripts/bench_ab.sh REV
#   MODES=idle_kib scripts/bench_ab.sh REV   (one of the two figures)
#   MODES=handshakes_ws scripts/bench_ab.sh REV   handshakes on /ws: presence to the newcomer,
#                                                 join/leave notices to the other 63 loops
#   MODES=fanout scripts/bench_ab.sh REV   server CPU ms per 1k deliveries, 200 clients saturated
#   MODES=p99 scripts/bench_ab.sh REV      p99 ms, 1,000 clients x 100 msg/s, two generator threads
#
# Both servers get the same flags: connection caps and rates lifted (the load comes from
# 127.0.0.x), every other setting at its default. Prints one line per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
REV=${1:?usage: scripts/bench_ab.sh REV}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-"handshakes idle_kib"}
ulimit -n "$(ulimit -Hn)"

build_ab "$REV"

# run BIN MODE: prints the figure.
run() {
  local bin=$1 mode=$2 work pid ws extra=()
  work=$(mktemp -d)
  # Older builds have no --max-handshakes-per-ip; newer ones need it lifted like the rest.
  "$bin" --help | grep -q max-handshakes-per-ip && extra=(--max-handshakes-per-ip 1024)
  RUST_LOG=warn "$bin" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --max-clients 12000 \
    --max-clients-per-ip 12000 --upgrade-rate 1000000 --message-rate 1000000 --message-rate-per-ip 1000000 \
    --data-dir "$work/data" "${extra[@]}" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 200); do grep -q "^ws listening" "$work/out" && break; sleep 0.05; done
  ws=$(sed -n 's|^ws listening on ws://||p' "$work/out")
  if [ "$mode" = fanout ]; then
    "$NEW" bench "ws://$ws/ws" --clients 200 --senders 10 --rate 0 --window 4 --duration-secs 10 --json \
      --server-pid "$pid" 2>/dev/null |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["server_cpu_ms_per_1k_deliveries"], 3))'
  elif [ "$mode" = p99 ]; then
    "$NEW" bench "ws://$ws/ws" --clients 1000 --senders 10 --rate 100 --duration-secs 15 --threads 2 --json \
      --server-pid "$pid" 2>/dev/null |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["latency_p99_ms"], 2))'
  elif [ "$mode" = handshakes ] || [ "$mode" = handshakes_ws ]; then
    local path=/echo
    [ "$mode" = handshakes_ws ] && path=/ws
    "$NEW" bench "ws://$ws$path" --handshakes --clients 64 --duration-secs 5 --json --server-pid "$pid" 2>/dev/null |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["handshakes_per_sec"]))'
  else
    "$NEW" bench "ws://$ws/ws" --clients 10000 --senders 0 --duration-secs 5 --threads 2 --json --server-pid "$pid" \
      2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["server_rss_per_client_kib"], 2))'
  fi
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  sleep 1
}

declare -A results
for mode in $MODES; do
  for round in $(seq 1 "$ROUNDS"); do
    # Alternate which goes first, so neither always runs on a warmer machine.
    if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
    for which in $order; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      figure=$(run "$bin" "$mode")
      echo "$mode round $round $which: $figure"
      results[$mode-$which]+="$figure "
    done
  done
done
for mode in $MODES; do
  python3 - "$mode" "${results[$mode-old]}" "${results[$mode-new]}" "$REV" <<'PY'
import statistics, sys
mode, old, new, rev = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()], sys.argv[4]
o, n = statistics.median(old), statistics.median(new)
print(f"{mode}: {rev} {o:g}, work tree {n:g} (median of {len(old)}), ratio {n / o:.2f}")
PY
done
