# Helpers shared by the scripts in this folder. Source it; do not run it.

# Installs Debian packages that are missing (CI and fresh machines run as root).
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

# start_server OUTDIR [ARGS...]: starts target/debug/threadchat on free ports in the
# background; sets SERVER_PID, HTTP (host:port) and WS (host:port) from its stdout.
start_server() {
  local out="$1"; shift
  "$BIN" --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 "$@" >"$out/server.out" 2>"$out/server.err" &
  SERVER_PID=$!
  local i
  for i in $(seq 1 100); do
    if [ "$(wc -l <"$out/server.out")" -ge 2 ]; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$out/server.err" >&2; echo "server exited during start-up" >&2; return 1
    fi
    sleep 0.05
  done
  HTTP=$(sed -n 's|^http listening on http://||p' "$out/server.out")
  WS=$(sed -n 's|^ws listening on ws://||p' "$out/server.out")
  [ -n "$HTTP" ] && [ -n "$WS" ] || { echo "server did not print its addresses" >&2; return 1; }
}

# wait_exit PID SECONDS: waits for a background process to end; returns its status, or
# 124 if it was still running after SECONDS.
wait_exit() {
  local pid=$1 limit=$2 i
  for i in $(seq 1 $((limit * 20))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"; return $?
    fi
    sleep 0.05
  done
  return 124
}

# free_port [N]: prints N (default 1) distinct TCP ports that are free now, for configs that need a number up front
# (nginx's upstreams, postgres, redis). Drawn below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range), so no other program's bind(0) or outgoing
# connection can take it between this check and its use; only an explicit bind could.
free_port() {
  python3 - "${1:-1}" <<'PY'
import random, socket, sys
want, found = int(sys.argv[1]), []
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, max(low, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    if port not in found:
        found.append(port)
    if len(found) == want:
        print(*found)
        break
else:
    raise SystemExit("not enough free ports below the ephemeral range")
PY
}

# mint SECRET NAME EXP_OFFSET_SECS [SUB]: an HS256 JWT for user SUB (default u-NAME) named
# NAME, expiring EXP_OFFSET_SECS from now, made by Python's standard library (so the
# server's own HS256 code is checked against something it did not write).
mint() {
  python3 - "$@" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, name, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
sub = sys.argv[4] if len(sys.argv) > 4 else "u-" + name
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": sub, "name": name, "exp": int(time.time()) + offset}).encode())
sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
}

# build_ab REV: builds the work tree and REV (in a git worktree under target/ab) in
# release; sets NEW and OLD to the two binaries (for side-by-side benchmarks).
build_ab() {
  local rev=$1 tree=target/ab/src-$1
  cargo build --release --quiet
  NEW=target/release/threadchat
  if [ ! -d "$tree" ]; then git worktree add -f "$tree" "$rev" >/dev/null; fi
  CARGO_TARGET_DIR=target/ab/target cargo build --release --quiet --manifest-path "$tree/Cargo.toml"
  OLD=target/ab/target/release/threadchat
}
