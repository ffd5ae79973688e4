#!/usr/bin/env bash
# Runs every test threadchat has, installing what they need on a fresh machine:
#   0. scripts/layers.py: the module layering of src/lib.rs holds; scripts/tour.py: every name
#      docs/tour.md links is defined in the file it links; the default build (what
#      `cargo run` compiles: no Postgres, no Redis) builds without warnings
#   1. with --all-features from here on: cargo tests (unit + integration over real sockets, the real binary included), with
#      the history in SQLite
#   2. the integration tests again with the history in a private PostgreSQL server
#   3. scripts/pg_backup.sh (pg_dump/pg_restore of a server's database, numbering on after),
#      scripts/smoke.sh (curl + the binary), then scripts/nginx.sh (two instances on a
#      private Redis behind nginx, configured with docs/nginx.conf)
#   4. the browser test (headless Debian Chromium driven by playwright-core)
#   5. WebSocket conformance: scripts/autobahn.sh (Autobahn|Testsuite, cases 1–10)
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_apt curl chromium redis-server nginx-light
command -v node >/dev/null && command -v npm >/dev/null || ensure_apt nodejs npm

# Each stage's output is kept, to count its tests for the summary at the end.
logs=$(mktemp -d)
pgdir=$(mktemp -d)
trap 'scripts/pg.sh stop "$pgdir"; rm -rf "$pgdir" "$logs"' EXIT
summary=()
skipped=0
# stage NAME COUNT_COMMAND -- COMMAND...: runs COMMAND with its output shown and kept in
# $log; on success, COUNT_COMMAND (reading $log) prints what ran, for the summary.
stage() {
  local name=$1 count=$2 rc; shift 3
  log="$logs/$name.log"
  echo "== $name"
  set +e
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || return "$rc"
  summary+=("$(printf '%-24s %s' "$name" "$(eval "$count")")")
}
cargo_counts() { # "N unit + M integration + K doc tests" from cargo test's result lines
  awk '/^ +Running unittests/ {k="unit"} /^ +Running tests\// {k="integ"} /^ +Doc-tests/ {k="doc"}
       /^test result: ok\./ {n[k] += $4}
       END {printf "%d unit + %d integration + %d doc tests", n["unit"], n["integ"], n["doc"]}' "$log"
}

stage layers 'sed -n "s/^layers: //p" "$log"' -- python3 scripts/layers.py
stage tour 'sed -n "s/^tour: //p" "$log"' -- python3 scripts/tour.py
# What `cargo run` builds: the default features (no Postgres, no Redis). It must build
# without warnings, and name the missing feature when asked for a backend it left out.
default_build() {
  # Warnings are read from cargo's output (it replays a fresh crate's warnings), not made
  # errors with RUSTFLAGS: changing RUSTFLAGS would rebuild every dependency once for this
  # stage and again for the next.
  cargo build --locked --bin threadchat 2>&1 | tee "$logs/default-build"
  if grep -q '^warning' "$logs/default-build"; then echo "FAIL the default build has warnings"; return 1; fi
  for flag in "--redis redis://127.0.0.1:1/0" "--database postgres://127.0.0.1:1/x"; do
    set +e
    target/debug/threadchat $flag --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 2>"$logs/err"
    local rc=$?
    set -e
    [ "$rc" = 2 ] && grep -q "feature" "$logs/err" || { cat "$logs/err"; echo "FAIL $flag"; return 1; }
    echo "ok   $flag is refused by name: $(cat "$logs/err")"
  done
}
# docs/threadchat.service, checked by systemd itself where it is installed (any warning,
# such as an unknown directive, fails), with ExecStart pointed at the binary just built.
systemd_unit() {
  command -v systemd-analyze >/dev/null || { echo "skipped: no systemd-analyze here"; return 0; }
  mkdir -p "$logs/unit"
  sed "s|/usr/local/bin/threadchat|$PWD/target/debug/threadchat|" docs/threadchat.service >"$logs/unit/threadchat.service"
  local out
  out=$(systemd-analyze verify "$logs/unit/threadchat.service" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "ok   docs/threadchat.service verifies cleanly"
}
stage "default build" 'echo "builds; $(grep -c "^ok " "$log") checks"' -- default_build
stage "systemd unit" 'grep -q "^skipped" "$log" && echo "skipped: no systemd-analyze" || echo "1 check"' -- systemd_unit
grep -q "^skipped" "$log" && skipped=$((skipped + 1))
# Everything else: every feature.
stage "cargo test (SQLite)" cargo_counts -- bash -c 'cargo build --locked --all-features && cargo test --locked --all-features'
pgurl=$(scripts/pg.sh start "$pgdir")
echo "private postgres: $pgurl"
stage "cargo test (Postgres)" cargo_counts -- \
  env THREADCHAT_TEST_DATABASE="$pgurl" cargo test --locked --all-features --test integration
stage "pg backup" 'grep -c "^ok " "$log" | sed "s/$/ checks/"' -- \
  env PGURL="$pgurl" BIN=target/debug/threadchat scripts/pg_backup.sh
stage smoke 'grep -c "^ok " "$log" | sed "s/$/ checks/"' -- env BIN=target/debug/threadchat scripts/smoke.sh
stage nginx 'grep -c "^ok " "$log" | sed "s/$/ checks/"' -- env BIN=target/debug/threadchat scripts/nginx.sh
stage browser 'sed -n "s/^# pass /tests passed: /p" "$log"' -- bash -c '
  cd tests/browser
  npm ci --no-audit --no-fund --loglevel=error
  THREADCHAT_BIN="$PWD/../../target/debug/threadchat" node --test'

# Autobahn exits 77 where it cannot run (no Python 2.7): a skip, said in the summary.
stage autobahn 'sed -n "s/^autobahn: //p" "$log" | tail -1' -- scripts/autobahn.sh || {
  rc=$?
  [ "$rc" = 77 ] || exit "$rc"
  skipped=$((skipped + 1))
  summary+=("$(printf '%-24s %s' autobahn "skipped: no Python 2.7 on this machine (see above)")")
}
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "stages: $((${#summary[@]} - skipped)) passed, 0 failed, $skipped skipped"
