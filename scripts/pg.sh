#!/usr/bin/env bash
# A private, throw-away PostgreSQL server for the tests.
#   scripts/pg.sh start DIR   → initdb in DIR, start on a free loopback port, print the URL
#   scripts/pg.sh stop DIR    → stop it (DIR can then be deleted)
# Installs Debian's postgresql package when missing. Runs the server as the `postgres`
# user, because initdb refuses to run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] || { echo "no PostgreSQL server binaries under /usr/lib/postgresql" >&2; return 1; }
  echo "$d"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case ${1:-} in
  start)
    dir=$2
    ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || ensure_apt postgresql
    bin=$(bindir)
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=$2
    bin=$(bindir)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop DIR" >&2
    exit 2
    ;;
esac
