#!/usr/bin/env bash
# Two threadchat instances on a private Redis, behind nginx configured with the README's
# snippet (docs/nginx.conf, ports substituted): the page, the API and WebSockets through one
# address, messages crossing instances, history replicated, /readyz.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
BIN=${BIN:-target/debug/threadchat}
[ -x "$BIN" ] || cargo build --quiet
command -v nginx >/dev/null || ensure_apt nginx-light
command -v redis-server >/dev/null || ensure_apt redis-server

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
pass=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); echo "ok   $name"; else echo "FAIL $name" >&2; exit 1; fi
}

read -r redis_port nginx_port http1 ws1 http2 ws2 <<<"$(free_port 6)"
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --dir "$work/redis" >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  sleep 0.05
done

ports=("$http1" "$ws1" "$http2" "$ws2")
for i in 1 2; do
  http=${ports[$(((i - 1) * 2))]}; ws=${ports[$(((i - 1) * 2 + 1))]}
  mkdir -p "$work/i$i"
  "$BIN" --http-addr "127.0.0.1:$http" --ws-addr "127.0.0.1:$ws" --data-dir "$work/i$i" \
    --redis "redis://127.0.0.1:$redis_port/0" --trusted-proxy 127.0.0.1 \
    --allow-origin "http://127.0.0.1:$nginx_port" --public-ws-url "ws://127.0.0.1:$nginx_port/ws" \
    >"$work/i$i/out" 2>"$work/i$i/err" &
  pids+=($!)
done

# The README's snippet with this run's ports, inside a minimal nginx.conf.
sed -e "s/127.0.0.1:3000;/127.0.0.1:${ports[0]};/" -e "s/127.0.0.1:3001;/127.0.0.1:${ports[1]};/" \
    -e "s/127.0.0.1:3010;/127.0.0.1:${ports[2]};/" -e "s/127.0.0.1:3011;/127.0.0.1:${ports[3]};/" \
    -e "s/listen 8080;/listen 127.0.0.1:$nginx_port;/" docs/nginx.conf >"$work/threadchat.conf"
cat >"$work/nginx.conf" <<CONF
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events {}
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  include $work/threadchat.conf;
}
CONF
nginx -t -q -p "$work" -c "$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

front="127.0.0.1:$nginx_port"
for _ in $(seq 1 200); do
  [ "$(curl -s "http://$front/readyz" 2>/dev/null)" = "ready" ] && \
    [ "$(curl -s "http://127.0.0.1:${ports[0]}/readyz")" = "ready" ] && \
    [ "$(curl -s "http://127.0.0.1:${ports[2]}/readyz")" = "ready" ] && break
  sleep 0.05
done
check "both instances ready behind nginx" [ "$(curl -fsS "http://$front/readyz")" = "ready" ]
check "the page through nginx" grep -q "<title>threadchat</title>" <(curl -fsS "http://$front/")
check "config names the public ws url" grep -q "\"ws_url\":\"ws://$front/ws\"" <(curl -fsS "http://$front/api/config")

# A tail through nginx; sends through nginx, which spreads them over both instances.
"$BIN" tail "ws://$front/ws" --count 4 --type message --timeout-secs 15 >"$work/tail.out" 2>"$work/tail.err" &
tail_pid=$!
for _ in $(seq 1 100); do grep -q connected "$work/tail.err" && break; sleep 0.05; done
check "tail connected through nginx" grep -q "connected as client" "$work/tail.err"
for n in 1 2 3 4; do
  "$BIN" send "ws://$front/ws" "via nginx $n" --name "sender$n" >/dev/null
done
wait_exit "$tail_pid" 15
check "tail got all four, in order" [ "$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' "$work/tail.out")" = "$(printf 'via nginx %s\n' 1 2 3 4)" ]
log1=$(grep -c "connected to /ws" "$work/i1/err" || true)
log2=$(grep -c "connected to /ws" "$work/i2/err" || true)
check "both instances served clients ($log1 + $log2)" [ "$log1" -gt 0 -a "$log2" -gt 0 ]
h1=$(curl -fsS "http://127.0.0.1:${ports[0]}/api/rooms/lobby/messages" | grep -o '"text":"via nginx [0-9]"' | tr '\n' ' ')
h2=$(curl -fsS "http://127.0.0.1:${ports[2]}/api/rooms/lobby/messages" | grep -o '"text":"via nginx [0-9]"' | tr '\n' ' ')
check "both instances stored the same history" [ "$h1" = "$h2" -a -n "$h1" ]
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Origin: http://evil.example" -H 'Connection: Upgrade' \
  -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://$front/ws")
check "a foreign origin is still refused through nginx (403)" [ "$status" = "403" ]
# (curl waits after the 101 for data that never comes: --max-time ends it.)
status=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' -H "Origin: http://$front" -H 'Connection: Upgrade' \
  -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://$front/ws" || true)
check "the page's own origin upgrades through nginx (101)" [ "$status" = "101" ]
echo "nginx: $pass checks passed"
