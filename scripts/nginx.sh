#!/usr/bin/env bash
# Two threadchat instances on a private Redis, behind nginx configured with the README's
# snippet (docs/nginx.conf, ports substituted): the page, the API and WebSockets through one
# address, messages crossing instances, history replicated, /readyz; and users, not names,
# on both: a guest is one user whichever instance nginx picks, a name is one user's on
# both, two JWT users claiming one name get two names. Guests use a shared token, users JWTs.
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
token=nginx-guests-token-0123456789
secret=nginx-jwt-secret-0123456789-0123456789
for i in 1 2; do
  http=${ports[$(((i - 1) * 2))]}; ws=${ports[$(((i - 1) * 2 + 1))]}
  mkdir -p "$work/i$i"
  "$BIN" --http-addr "127.0.0.1:$http" --ws-addr "127.0.0.1:$ws" --data-dir "$work/i$i" \
    --redis "redis://127.0.0.1:$redis_port/0" --trusted-proxy 127.0.0.1 --token "$token" --jwt-secret "$secret" \
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
export THREADCHAT_TOKEN=$token # the guests' credential, for every send and tail below
auth=(-H "Authorization: Bearer $token")

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
h1=$(curl -fsS "${auth[@]}" "http://127.0.0.1:${ports[0]}/api/rooms/lobby/messages" | grep -o '"text":"via nginx [0-9]"' | tr '\n' ' ')
h2=$(curl -fsS "${auth[@]}" "http://127.0.0.1:${ports[2]}/api/rooms/lobby/messages" | grep -o '"text":"via nginx [0-9]"' | tr '\n' ' ')
check "both instances stored the same history" [ "$h1" = "$h2" -a -n "$h1" ]
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Origin: http://evil.example" -H 'Connection: Upgrade' \
  -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://$front/ws")
check "a foreign origin is still refused through nginx (403)" [ "$status" = "403" ]
# (curl waits after the 101 for data that never comes: --max-time ends it.)
status=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' -H "Origin: http://$front" -H 'Connection: Upgrade' \
  -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "${auth[@]}" "http://$front/ws" || true)
check "the page's own origin upgrades through nginx (101)" [ "$status" = "101" ]

# Users, not names, across the two instances (nginx alternates them per connection).
# One guest identity file: four sends, spread over both instances, are one user.
for n in 1 2 3 4; do
  "$BIN" send "ws://$front/ws" "same guest $n" --identity-file "$work/guest-a" >>"$work/guest-a.out"
done
users=$(sed -n 's/.*"user":"\([^"]*\)".*/\1/p' "$work/guest-a.out" | sort -u)
check "a guest is one user on both instances ($users)" [ "$(echo "$users" | wc -l)" = 1 -a "${users:0:6}" = "guest~" ]
# That guest holds "ann" (a tail that stays); nobody else may take it, on either instance.
"$BIN" tail "ws://$front/ws" --identity-file "$work/guest-a" --name ann --timeout-secs 30 --count 1000 \
  >/dev/null 2>"$work/ann.err" &
ann_pid=$!
pids+=("$ann_pid")
for _ in $(seq 1 100); do grep -q connected "$work/ann.err" && break; sleep 0.05; done
refusals=0
for n in 1 2; do # two connections: nginx sends one to each instance
  if ! "$BIN" send "ws://$front/ws" "as ann" --name ANN 2>"$work/ann-refused.err" \
    && grep -q "belongs to someone else" "$work/ann-refused.err"; then
    refusals=$((refusals + 1))
  fi
done
check "another guest cannot take ann's name on either instance ($refusals of 2 refused)" [ "$refusals" = 2 ]
# Two JWT users whose name claims are both "sam": two names, whichever instance each meets.
"$BIN" send "ws://$front/ws" "first sam" --token "$(mint "$secret" sam 300 u-sam-1)" >"$work/sam1.out"
"$BIN" send "ws://$front/ws" "second sam" --token "$(mint "$secret" sam 300 u-sam-2)" >"$work/sam2.out"
names=$(sed -n 's/.*"user":"\(u-sam-[12]\)","name":"\([^"]*\)".*/\1=\2/p' "$work/sam1.out" "$work/sam2.out" | tr '\n' ' ')
check "two JWT users claiming one name get two names ($names)" [ "$names" = "u-sam-1=sam u-sam-2=sam-2 " ]
"$BIN" send "ws://$front/ws" "a guest as sam" --name sam 2>"$work/sam-guest.err" || true
check "a guest may not take a signed-in user's name" grep -q "belongs to someone else" "$work/sam-guest.err"
kill "$ann_pid" 2>/dev/null || true
echo "nginx: $pass checks passed"
