#!/usr/bin/env bash
# Smoke test of the built binary with nothing but curl and the binary itself: the page,
# the API, chat through `send`/`tail`, /echo, and a clean exit on Ctrl-C (SIGINT).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
BIN=${BIN:-target/debug/threadchat}
[ -x "$BIN" ] || cargo build --quiet
command -v curl >/dev/null || ensure_apt curl

work=$(mktemp -d)
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
pass=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); echo "ok   $name"; else echo "FAIL $name" >&2; exit 1; fi
}

# Its own data directory: never the repo's ./data, which `cargo run` uses.
start_server "$work" --data-dir "$work/data"
echo "server: http://$HTTP ws://$WS"

curl -fsS "http://$HTTP/" -o "$work/index.html"
check "page is served" grep -q "<title>threadchat</title>" "$work/index.html"
ctype=$(curl -fsS -o /dev/null -w '%{content_type}' "http://$HTTP/app.js")
check "app.js content type" [ "$ctype" = "text/javascript; charset=utf-8" ]
check "healthz" [ "$(curl -fsS "http://$HTTP/healthz")" = "ok" ]
check "config names the page's own origin" grep -q "\"ws_url\":\"ws://$HTTP/ws\"" <(curl -fsS "http://$HTTP/api/config")
status=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "http://$HTTP/../Cargo.toml")
check "traversal is 404" [ "$status" = "404" ]
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Connection: Upgrade' -H 'Upgrade: websocket' "http://$HTTP/ws")
check "an upgrade without a key is 400" [ "$status" = "400" ]
status=$(curl -s -o /dev/null -w '%{http_code}' "http://$HTTP/ws")
check "a plain GET of /ws is 426" [ "$status" = "426" ]
check "the ws port serves the page too" [ "$(curl -fsS "http://$WS/healthz")" = "ok" ]

"$BIN" tail "ws://$WS/ws" --count 2 --type message --timeout-secs 10 >"$work/tail.out" 2>"$work/tail.err" &
tail_pid=$!
for _ in $(seq 1 100); do grep -q connected "$work/tail.err" && break; sleep 0.05; done
check "tail connected" grep -q "connected as client" "$work/tail.err"

"$BIN" send "ws://$WS/ws" "hello from smoke" --name smoke >"$work/send1.out"
check "send prints its broadcast" grep -q '"text":"hello from smoke"' "$work/send1.out"
"$BIN" send "ws://$HTTP/ws" "second, through the http port" >/dev/null
wait_exit "$tail_pid" 10
check "tail got both messages" [ "$(grep -c '"type":"message"' "$work/tail.out")" = "2" ]
check "tail saw the name" grep -q '"name":"smoke"' "$work/tail.out"

check "echo" [ "$("$BIN" send "ws://$WS/echo" 'echo me')" = "echo me" ]

set +e
"$BIN" send "ws://$WS/nowhere" x 2>"$work/err.txt"; code=$?
set -e
check "send to a bad path fails" [ "$code" = "1" ]
check "with a clear message" grep -q "HTTP 404" "$work/err.txt"

kill -INT "$SERVER_PID"
set +e
wait_exit "$SERVER_PID" 10; code=$?
set -e
check "Ctrl-C exits 0" [ "$code" = "0" ]

# JWTs made by another implementation (Python's standard library) are accepted, and only
# those: the server's own HS256 code is checked against something it did not write.
secret=smoke-secret-smoke-secret-smoke-secret
mkdir -p "$work/jwt"
start_server "$work/jwt" --data-dir "$work/jwt" --jwt-secret "$secret"
"$BIN" send "ws://$WS/ws" "signed elsewhere" --token "$(mint "$secret" carol 300)" >"$work/jwt.out"
check "a JWT from Python's hmac is accepted, with its name" grep -q '"name":"carol"' "$work/jwt.out"
set +e
"$BIN" send "ws://$WS/ws" x --token "$(mint wrong-secret-wrong-secret-wrong-secret carol 300)" 2>"$work/err.txt"
bad_key=$?
"$BIN" send "ws://$WS/ws" x --token "$(mint "$secret" carol -300)" 2>>"$work/err.txt"
expired=$?
set -e
check "a JWT signed with another key is refused" [ "$bad_key" = "1" ]
check "an expired JWT is refused" [ "$expired" = "1" ]
check "both with 401" [ "$(grep -c "HTTP 401" "$work/err.txt")" = "2" ]
kill -INT "$SERVER_PID"
wait_exit "$SERVER_PID" 10
echo "smoke: $pass passed, 0 failed"
