#!/usr/bin/env bash
# Mutation testing of the guards with cargo-mutants: it replaces function bodies in the
# files that guard something (a check that always passes, a limit that never applies, a
# count that is always 0) and reports each mutant no test notices. Too slow for every CI
# run (each mutant is a rebuild and a test run): run it when a guard changes.
#
#   scripts/mutants.sh              the guard selection below
#   scripts/mutants.sh FILE...      those files instead
#
# Results: mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(
    src/net/access.rs      # per-address buckets, the IP table, X-Forwarded-For
    src/net/auth.rs        # tokens, JWTs, login names, per-user sessions
    src/net/tickets.rs     # one-time tickets and their shares
    src/net/admission.rs   # who gets a thread
    src/conn/budget.rs     # the server-wide outgoing budget
    src/net/files.rs       # static paths
  )
fi
args=()
for f in "${files[@]}"; do args+=(--file "$f"); done
cargo mutants "${args[@]}" --timeout 180 -- --test integration --lib
