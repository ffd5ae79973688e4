#!/usr/bin/env bash
# The Postgres backup path the README documents, once, for real: a server on one database
# takes messages, `pg_dump -Fc` copies it, `pg_restore` puts it in a second database, and a
# server there numbers on from the restored seq with the same messages (threadchat export).
#
#   PGURL=postgres://…/postgres BIN=target/debug/threadchat scripts/pg_backup.sh
# (scripts/test.sh runs it against its private server.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
: "${PGURL:?the URL of a Postgres server is needed}"
BIN=${BIN:-target/debug/threadchat}
work=$(mktemp -d)
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$work"' EXIT
pass=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); echo "ok   $name"; else echo "FAIL $name" >&2; exit 1; fi
}
base=${PGURL%/*}
db_a="bk_a_$$" db_b="bk_b_$$"
psql -q "$PGURL" -c "CREATE DATABASE $db_a" -c "CREATE DATABASE $db_b"

mkdir -p "$work/a" "$work/b"
start_server "$work/a" --data-dir "$work/a" --database "$base/$db_a"
for n in 1 2 3; do "$BIN" send "ws://$WS/ws" "before the dump $n" >/dev/null; done
kill -INT "$SERVER_PID"; wait_exit "$SERVER_PID" 10; SERVER_PID=""
pg_dump -Fc -f "$work/dump" "$base/$db_a"
check "pg_dump wrote a dump" [ -s "$work/dump" ]
pg_restore -d "$base/$db_b" "$work/dump"
"$BIN" export --database "$base/$db_a" >"$work/a.jsonl"
"$BIN" export --database "$base/$db_b" >"$work/b.jsonl"
same=no
[ "$(wc -l <"$work/b.jsonl")" = 3 ] && cmp -s "$work/a.jsonl" "$work/b.jsonl" && same=yes
check "the restored database holds the same 3 messages" [ "$same" = yes ]
start_server "$work/b" --data-dir "$work/b" --database "$base/$db_b"
"$BIN" send "ws://$WS/ws" "after the restore" >"$work/after.json"
check "numbering continues above the restored seq (4)" grep -q '"seq":4' "$work/after.json"
kill -INT "$SERVER_PID"; wait_exit "$SERVER_PID" 10; SERVER_PID=""
psql -q "$PGURL" -c "DROP DATABASE $db_a" -c "DROP DATABASE $db_b"
echo "pg backup: $pass passed, 0 failed"
