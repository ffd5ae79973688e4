#!/usr/bin/env bash
# Side-by-side benchmark: threadchat against three reference chat servers, each written the
# way its stack's own chat example is written, driven by the same load generator
# (`threadchat bench`), the servers taking turns within each scenario:
#   node     Node `ws` + http, as the tutorials teach it     scripts/reference/server.js
#   gorilla  Go, gorilla/websocket's chat example             scripts/reference/gorilla/
#   axum     Rust, axum + tokio's chat example                scripts/reference/axum/
# and against the floor: the least server this kernel allows for the same chat (raw epoll,
# no storage, pre-framed batches, one send per client per batch; for memory, a thread per
# connection parked in read() with a 16 KiB stack)        scripts/reference/floor/
#
#   scripts/bench.sh              all scenarios, one round (about 15 minutes)
#   ROUNDS=3 scripts/bench.sh     median of three rounds
#   SCENARIOS="1 2" scripts/bench.sh
#   SERVERS="threadchat gorilla" scripts/bench.sh
#   SCENARIOS=rooms scripts/bench.sh   what a room costs (threadchat only: the references have none)
#   SCENARIOS=storm scripts/bench.sh   the reconnect storm: 10,000 clients dropped at once, back
#                                      after 1 s (threadchat with ?resume=, the others without)
#   scripts/bench.sh cluster      three instances on one Redis (see the end of this file)
#
# Prints a table (threadchat, each reference, and threadchat's ratio to each) and writes
# every raw report (JSON) and the table to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ROUNDS=${ROUNDS:-1}
SCENARIOS=${SCENARIOS:-"1 2 3 4 5 storm rooms"}
SERVERS=${SERVERS:-"threadchat node gorilla axum floor"}
if [ "${1:-}" = cluster ]; then SERVERS=threadchat; fi

cargo build --release --quiet
BIN=target/release/threadchat
# The references: each built here, from Debian's packages, npm and crates.io only.
case " $SERVERS " in *" node "*)
  command -v node >/dev/null || ensure_apt nodejs npm
  (cd scripts/reference && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ;;
esac
case " $SERVERS " in *" gorilla "*)
  # GOPATH mode: the library comes from the Debian package's source tree, no module download.
  ensure_apt golang-go golang-github-gorilla-websocket-dev
  mkdir -p target/reference-gorilla
  (cd scripts/reference/gorilla && GOPATH=/usr/share/gocode GO111MODULE=off \
    go build -o ../../../target/reference-gorilla/server server.go) ;;
esac
case " $SERVERS " in *" floor "*)
  CARGO_TARGET_DIR=target/reference-floor cargo build --release --quiet \
    --manifest-path scripts/reference/floor/Cargo.toml ;;
esac
case " $SERVERS " in *" axum "*)
  CARGO_TARGET_DIR=target/reference-axum cargo build --release --quiet \
    --manifest-path scripts/reference/axum/Cargo.toml ;;
esac
# 10,000 clients need 10,000 fds in the server and in the load generator.
ulimit -n "$(ulimit -Hn)"

out=target/bench
work=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$work"' EXIT

# start SERVER: sets PID and URL; one retry after a pause (right after the 10,000-client
# scenario a start has been seen to time out once).
start() {
  start_once "$1" || { echo "retrying $1 in 3 s" >&2; kill "$PID" 2>/dev/null; sleep 3; start_once "$1"; } \
    || { cat "$work/server.out" "$work/server.err" >&2; echo "$1 did not start" >&2; exit 1; }
}

# start_once SERVER: sets PID and URL. Benchmarks lift the connection caps and the rate
# limits, per client and per address (all clients come from 127.0.0.x and send as fast as
# they can); every other limit stays at its default, durability included (--sync-commit on:
# every message is fsynced to a fresh SQLite history before it is broadcast — the
# references store nothing).
start_once() {
  case $1 in
    threadchat)
      rm -rf "$work/data"
      RUST_LOG=warn "$BIN" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --max-clients 12000 \
        --max-clients-per-ip 12000 --max-handshakes-per-ip 1024 --upgrade-rate 1000000 --message-rate 1000000 --message-rate-per-ip 1000000 \
        --data-dir "$work/data" ${TC_ARGS:-} >"$work/server.out" 2>"$work/server.err" &
      PID=$! ;;
    node)
      node scripts/reference/server.js 0 >"$work/server.out" 2>"$work/server.err" &
      PID=$! ;;
    gorilla)
      target/reference-gorilla/server 0 >"$work/server.out" 2>"$work/server.err" &
      PID=$! ;;
    axum)
      target/reference-axum/release/axum-chat-reference 0 >"$work/server.out" 2>"$work/server.err" &
      PID=$! ;;
    # In scenario 3 (memory) the thread floor; everywhere else the epoll floor.
    floor)
      target/reference-floor/release/floor 0 ${FLOOR_ARGS:-} >"$work/server.out" 2>"$work/server.err" &
      PID=$! ;;
  esac
  for _ in $(seq 1 400); do
    grep -q "^ws listening on" "$work/server.out" && break
    sleep 0.05
  done
  URL="ws://$(sed -n 's|^ws listening on ws://||p' "$work/server.out")${WSPATH:-/ws}"
  [ "${URL#ws://}" != "${WSPATH:-/ws}" ]
}

stop() {
  kill -INT "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# run NAME ROUND SERVER BENCH-ARGS...
run() {
  local name=$1 round=$2 server=$3; shift 3
  start "$server"
  echo "scenario $name, round $round: $server" >&2
  "$BIN" bench "$URL" --server-pid "$PID" --json "$@" >"$out/$name-$server-$round.json"
  stop
  sleep 1 # let TIME_WAIT and the other core settle
}

# The cluster scenario: three instances on one private Redis (a Unix socket), clients
# spread over them (client i on instance i mod 3), senders on all three.
#   1. cluster-latency: 1,000 clients x 100 msg/s, as scenario 2, and the same load on one
#      instance without Redis: the p99 of a delivery that crossed instances beside that.
#   2. cluster-rate: 9 clients (3 per instance), all senders, the total rate raised step by
#      step; the highest rate with p99 < 50 ms and every message delivered is what the
#      ordered log sustains. Redis's CPU is reported for each step.
if [ "${1:-}" = cluster ]; then
  out=target/bench/cluster
  rm -rf "$out" && mkdir -p "$out"
  command -v redis-server >/dev/null || ensure_apt redis-server
  cargo build --release --quiet --features redis
  cp target/release/threadchat "$work/threadchat-redis"
  redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done
  # start_cluster: three instances; sets PIDS and URLS.
  start_cluster() {
    redis-cli -s "$work/redis.sock" flushall >/dev/null
    PIDS="" URLS=""
    for i in 1 2 3; do
      rm -rf "$work/data$i"
      RUST_LOG=warn "$work/threadchat-redis" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --max-clients 12000 \
        --max-clients-per-ip 12000 --max-handshakes-per-ip 1024 --upgrade-rate 1000000 --message-rate 1000000 --message-rate-per-ip 1000000 \
        --data-dir "$work/data$i" --redis "unix://$work/redis.sock" >"$work/server$i.out" 2>"$work/server$i.err" &
      PIDS="$PIDS $!"
    done
    PID=$PIDS
    for i in 1 2 3; do
      for _ in $(seq 1 400); do grep -q "^ws listening on" "$work/server$i.out" && break; sleep 0.05; done
      URLS="$URLS ws://$(sed -n 's|^ws listening on ws://||p' "$work/server$i.out")/ws"
    done
    # Ready = connected to Redis and following the log.
    for i in 1 2 3; do
      http=$(sed -n 's|^http listening on ||p' "$work/server$i.out")
      for _ in $(seq 1 100); do curl -sf "$http/readyz" >/dev/null && break; sleep 0.1; done
    done
  }
  stop_cluster() { kill -INT $PIDS 2>/dev/null || true; wait $PIDS 2>/dev/null || true; PID=""; sleep 1; }
  pid_args() { for p in $PIDS; do printf -- '--server-pid %s ' "$p"; done; }

  for round in $(seq 1 "$ROUNDS"); do
    start_cluster
    echo "cluster-latency, round $round: 3 instances" >&2
    # shellcheck disable=SC2046,SC2086
    "$BIN" bench $URLS $(pid_args) --redis-pid "$REDIS_PID" --json --clients 1000 --senders 10 --rate 100 \
      --duration-secs 15 >"$out/cluster-latency-3-$round.json"
    stop_cluster
    start threadchat
    echo "cluster-latency, round $round: 1 instance, no Redis" >&2
    "$BIN" bench "$URL" --server-pid "$PID" --json --clients 1000 --senders 10 --rate 100 --duration-secs 15 \
      >"$out/cluster-latency-1-$round.json"
    stop
  done
  for rate in ${RATES:-2000 5000 10000 15000 20000 25000 30000 40000}; do
    start_cluster
    echo "cluster-rate: $rate msg/s over 3 instances" >&2
    # shellcheck disable=SC2046,SC2086
    "$BIN" bench $URLS $(pid_args) --redis-pid "$REDIS_PID" --json --clients 9 --senders 9 --rate "$rate" \
      --duration-secs 8 >"$out/cluster-rate-$rate.json"
    stop_cluster
  done
  python3 scripts/bench_table.py --cluster "$out" | tee "$out/table.md"
  exit 0
fi

rm -rf "$out" && mkdir -p "$out"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate which server goes first, so none always runs on a warmer machine.
  read -ra list <<<"$SERVERS"
  k=$(( (round - 1) % ${#list[@]} ))
  order="${list[*]:k} ${list[*]:0:k}"
  for s in $SCENARIOS; do
    for server in $order; do
      case $s in
        1) run 1-fanout "$round" "$server" --clients 200 --senders 10 --rate 0 --window 4 --duration-secs 10 ;;
        # One load-generator thread reads all 1,000 sockets and is itself ~65 % busy, so its
        # own queue is part of every server's p99; with two it is ~35 % busy per thread.
        2) run 2-latency "$round" "$server" --clients 1000 --senders 10 --rate 100 --duration-secs 15
           run 2-latency_2gen "$round" "$server" --clients 1000 --senders 10 --rate 100 --duration-secs 15 --threads 2 ;;
        # The thread floor only parks its clients: it has memory to show, nothing to send.
        3) if [ "$server" = floor ]; then
             FLOOR_ARGS=--threads run 3-quiet "$round" "$server" --clients 10000 --senders 0 --duration-secs 10 --threads 2
             continue
           fi
           run 3-idle "$round" "$server" --clients 10000 --senders 1 --rate 1 --duration-secs 15 --threads 2
           run 3-quiet "$round" "$server" --clients 10000 --senders 0 --duration-secs 10 --threads 2
           # The reference sends no join notices; without them threadchat does the same
           # protocol work per connection.
           if [ "$server" = threadchat ]; then
             TC_ARGS="--join-notice-limit 0" run 3-idle_nonotice "$round" "$server" --clients 10000 --senders 1 --rate 1 --duration-secs 5 --threads 2
           fi ;;
        4) run 4-base "$round" "$server" --clients 1000 --senders 10 --rate 100 --payload-bytes 3800 --duration-secs 25
           run 4-stalled "$round" "$server" --clients 1000 --senders 10 --rate 100 --payload-bytes 3800 --duration-secs 25 --stalled 1 ;;
        # threadchat's /ws also broadcasts join and leave to the other 63 clients on every
        # connect; /echo is the bare upgrade, which is all the reference's /ws does.
        5) if [ "$server" = threadchat ]; then
             WSPATH=/echo run 5-handshakes "$round" "$server" --handshakes --clients 64 --duration-secs 5
             run 5-handshakes_ws "$round" "$server" --handshakes --clients 64 --duration-secs 5
           else
             run 5-handshakes "$round" "$server" --handshakes --clients 64 --duration-secs 5
           fi ;;
        # A proxy in front restarts: 10,000 clients dropped at once, all back 1 s later,
        # while one more posts 10 msg/s throughout (100,000 deliveries/s to the room).
        # threadchat's come back with ?resume= and must get every message they missed.
        storm) if [ "$server" != floor ]; then
             resume=""; [ "$server" = threadchat ] && resume=--resume
             start "$server"
             echo "scenario storm, round $round: $server" >&2
             "$BIN" bench "$URL" --storm $resume --clients 10000 --rate 10 --storm-gap-ms 1000 --server-pid "$PID" \
               >"$out/storm-$server-$round.json"
             stop
             sleep 1
           fi ;;
        # What a room costs: 10,000 rooms joined by one client, then each posted to and
        # left (empty rooms with history stay listed); and how long listing them takes.
        rooms) if [ "$server" = threadchat ]; then
             TC_ARGS="--max-rooms 20000 --max-rooms-per-client 20000" start threadchat
             http=$(sed -n 's|^http listening on http://||p' "$work/server.out")
             echo "scenario rooms, round $round: threadchat" >&2
             "$BIN" bench "$URL" --rooms 10000 --server-pid "$PID" --http "$http" >"$out/rooms-threadchat-$round.json"
             stop
           fi ;;
      esac
    done
  done
done
for f in "$out"/rooms-threadchat-*.json; do
  [ -e "$f" ] && echo "rooms ($(basename "$f" .json)): $(cat "$f")"
done

python3 scripts/bench_table.py "$out" | tee "$out/table.md"
