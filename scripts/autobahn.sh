#!/usr/bin/env bash
# WebSocket conformance: the Autobahn|Testsuite fuzzing client against /echo on both ports
# (the HTTP port and --ws-addr run the same code path; both are checked), cases 1–10
# (12.* and 13.* need compression, which threadchat does not offer).
#
# wstest exits 0 even when cases fail, so this script reads reports/servers/index.json and
# fails on any case whose behavior or close behavior is not OK, NON-STRICT or INFORMATIONAL.
# Autobahn needs Python 2.7 (pyenv's 2.7.18 on these machines) and virtualenv < 20.22.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Exit status 77: skipped, because no Python 2.7 can be had here (a fresh Debian 12 has
# none, and no registry can supply an interpreter); the reason is printed on stderr.
out=${AUTOBAHN_OUT:-target/autobahn}
venv=$out/venv
mkdir -p "$out"
if [ ! -x "$venv/bin/wstest" ]; then
  py2=""
  command -v pyenv >/dev/null && py2="$(pyenv root)/versions/2.7.18/bin/python"
  [ -x "$py2" ] || py2=$(command -v python2 || true)
  if [ -z "$py2" ]; then
    echo "autobahn: skipped: Autobahn|Testsuite needs Python 2.7, and this machine has none" \
      "(looked for pyenv's 2.7.18 and python2); run scripts/autobahn.sh where one is installed" >&2
    exit 77
  fi
  "$py2" -m pip install -q 'virtualenv<20.22' 2>/dev/null
  "$py2" -m virtualenv -q "$venv"
  "$venv/bin/pip" install -q autobahntestsuite 2>/dev/null
fi

cargo build --release --quiet
BIN=target/release/threadchat
work=$(mktemp -d)
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
# The 9.* cases echo messages of up to 16 MiB, and the suite opens hundreds of
# connections in a row: lift the message cap, the queue cap and the per-IP rates for this
# run only. Everything else — framing, UTF-8, close handling — is the default server.
start_server "$work" --data-dir "$work/data" --max-message-bytes 20000000 --max-queued-bytes 50000000 \
  --upgrade-rate 1000000 --max-clients-per-ip 10000 --message-rate 1000000 --message-rate-per-ip 1000000

cat >"$work/fuzzingclient.json" <<JSON
{
  "outdir": "$PWD/$out/reports/servers",
  "servers": [
    { "agent": "ws-port", "url": "ws://$WS/echo" },
    { "agent": "http-port", "url": "ws://$HTTP/echo" }
  ],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
rm -rf "$out/reports"
(cd "$work" && "$OLDPWD/$venv/bin/wstest" -m fuzzingclient -s fuzzingclient.json >"$OLDPWD/$out/wstest.log" 2>&1)

python3 - "$out/reports/servers/index.json" <<'PY'
import json, sys
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Cases 1-10 of this Autobahn version: fewer means some did not run.
EXPECTED = 301
report = json.load(open(sys.argv[1]))
passed = failed = 0
for agent in ("ws-port", "http-port"):
    cases = report.get(agent, {})
    bad = {c: r for c, r in cases.items() if r["behavior"] not in ok or r["behaviorClose"] not in ok}
    for case in sorted(bad, key=lambda c: [int(x) for x in c.split(".")]):
        print(f"autobahn {agent} case {case}: behavior {bad[case]['behavior']}, close {bad[case]['behaviorClose']}")
    if len(cases) < EXPECTED:
        print(f"autobahn {agent}: only {len(cases)} of {EXPECTED} cases ran")
        failed += EXPECTED - len(cases)
    passed += len(cases) - len(bad)
    failed += len(bad)
print(f"autobahn: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
