#!/usr/bin/env bash
# Mutation testing of the guards with cargo-mutants: it replaces function bodies and
# operators in the code that guards something (a check that always passes, a limit that
# never applies, a count that is always 0) and reports each mutant no test notices. Too
# slow for every CI run (each mutant is a rebuild and a test run, ~15 s; the selection is
# ~270 mutants, about 70 minutes on 2 cores): run it when a guard changes.
#
#   scripts/mutants.sh              the guard selection below
#   scripts/mutants.sh FILE...      every mutant of those files instead
#
# Results: mutants.out/ (caught.txt, missed.txt, timeout.txt, unviable.txt), or
# mutants.out/{whole,parts}/ for the selection.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

# The integration tests and the unit tests, 12 at a time: most of a test's time is spent
# waiting on a socket or a deadline, not on the CPU. The listing-speed test is skipped: it
# times a debug build, which twelve neighbours slow past its bound (it guards no budget).
test_args=(-- --test integration --lib -- --test-threads 12 --skip listings_answer_fast)

if [ $# -gt 0 ]; then
  args=()
  for f in "$@"; do args+=(--file "$f"); done
  exec cargo mutants --all-features "${args[@]}" --timeout 180 "${test_args[@]}"
fi

# Files that are guards through and through: every mutant counts.
whole=(
  src/net/access/per_ip.rs      # per-address buckets, the IP table, X-Forwarded-For
  src/net/access/auth.rs        # tokens, JWTs, login names, per-user sessions
  src/net/access/tickets.rs     # one-time tickets and their shares
  src/net/entry/admission.rs   # who gets a thread
  src/conn/unsent.rs     # the server-wide outgoing budget
  src/net/http/files.rs       # static paths
  src/net/ws/chat.rs     # what a session may do: rooms it may enter, DMs, typing, plain text
  src/chat/hub/conversations.rs  # the conversation budget
  src/net/access/frame_rate.rs        # what a client's frames may cost (messages, pings, echoes)
  src/net/access/history_rate.rs      # one address's history reads
  src/net/access/identity.rs    # guest identities: issued, verified, the key kept
  src/chat/names.rs             # one user per name, JWT reservations, the cluster's ledger
)
args=()
for f in "${whole[@]}"; do args+=(--file "$f"); done
cargo mutants --all-features "${args[@]}" --timeout 180 -o mutants.out/whole "${test_args[@]}" || true

# Files that mix guards with plumbing: only the guarding functions.
#  - conn/outbox.rs and outbox/ending.rs: the per-client queue cap, queued-bytes
#    accounting, shedding, the close deadline;
#  - chat/backplane/mod.rs: readiness, publishing, and answering messages never read back.
cargo mutants --all-features --file src/conn/outbox.rs --file src/conn/outbox/ending.rs --file src/chat/backplane/mod.rs \
  -F 'Conn::(push|push_control|push_close|close_queued|shed|queued_bytes|wait_drained|send_blocking)( |$)' \
  -F 'Drop for Conn' -F 'Backplane::(ready|pending)' -F 'expire_pending' -F 'Publisher::publish' \
  --timeout 180 -o mutants.out/parts "${test_args[@]}" || true

for d in whole parts; do
  echo "$d: $(wc -l <mutants.out/$d/mutants.out/caught.txt) caught," \
    "$(wc -l <mutants.out/$d/mutants.out/timeout.txt) timed out (caught)," \
    "$(wc -l <mutants.out/$d/mutants.out/missed.txt) missed," \
    "$(wc -l <mutants.out/$d/mutants.out/unviable.txt) unviable"
  cat mutants.out/$d/mutants.out/missed.txt
done
