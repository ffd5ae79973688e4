#!/usr/bin/env bash
# Clean build times as a new user meets them: `cargo build --release`, and `cargo build`
# (what `cargo run` compiles), each from an empty target directory, one after the other,
# with the `--timings` report of each kept in target/build-time/. Run it on an idle machine.
#
#   scripts/build_time.sh [REV...]    the commits to measure (default: HEAD)
#
# Sources are fetched first (`cargo fetch`), so the figures are compile time, not download.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/build-time
mkdir -p "$out"
revs=("$@")
[ ${#revs[@]} -eq 0 ] && revs=(HEAD)
work=$(mktemp -d)
trap 'for d in "$work"/src-*; do git -C "$root" worktree remove --force "$d" 2>/dev/null || true; done; rm -rf "$work"' EXIT
for rev in "${revs[@]}"; do
  short=$(git rev-parse --short "$rev")
  src=$work/src-$short
  git worktree add -q --detach "$src" "$rev"
  (cd "$src" && cargo fetch --locked -q)
  for profile in release debug; do
    flags=()
    [ "$profile" = release ] && flags=(--release)
    start=$(date +%s%N)
    (cd "$src" && CARGO_TARGET_DIR="$work/target-$short-$profile" cargo build --locked "${flags[@]}" --timings -q)
    ms=$((($(date +%s%N) - start) / 1000000))
    units=$(grep -o 'unit-count">[0-9]*\|Total units:</td><td>[0-9]*' "$work/target-$short-$profile/cargo-timings/cargo-timing.html" | grep -o '[0-9]*$' | head -1 || true)
    cp "$work/target-$short-$profile/cargo-timings/cargo-timing.html" "$out/$short-$profile.html"
    printf '%s %-7s %6.1f s  (%s units; report: target/build-time/%s-%s.html)\n' \
      "$short" "$profile" "$(echo "$ms" | awk '{print $1 / 1000}')" "${units:-?}" "$short" "$profile"
    rm -rf "$work/target-$short-$profile"
  done
done
