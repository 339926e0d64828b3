#!/usr/bin/env bash
# End to end on a real GPU host: a verifier on loopback (mTLS, SQLite), the agent reading the
# real driver through NVML, enrollment, a few attestations, an offline envelope from `once`
# ingested, and the regulator's offline check of an inclusion proof.
#
# Run from the repository root with the project's dependencies importable (PYTHONPATH), e.g. on
# a lent GPU machine after installing carried wheels into /tmp/site:
#     OUT=/some/dir PYTHONPATH=/tmp/site:$PWD scripts/device_e2e.sh
# Writes to $OUT: e2e.tgz (logs, fleet/agents/findings/ingest JSON, key, proof).
set -u
out="${OUT:-./e2e}"
py="${PYTHON:-python3}"
st="$(mktemp -d)"
mkdir -p "$out" "$st/res"
V=("$py" -m verifier.cli --config "$st/verifier.toml")
A=("$py" -m agent.cli)

cat >"$st/verifier.toml" <<TOML
listen = "127.0.0.1:17443"
enroll_listen = "127.0.0.1:17444"
state_dir = "$st/verifier"
metrics_listen = ""
[tls]
names = ["localhost", "127.0.0.1"]
TOML

wait_port() {
  "$py" - "$1" <<'PY'
import socket, sys, time
for _ in range(150):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
}

"${V[@]}" registry import examples/registry.toml
"${V[@]}" serve >"$st/res/verifier.log" 2>&1 &
vpid=$!
if ! { wait_port 17444 && wait_port 17443; }; then
  echo "verifier did not start"; cat "$st/res/verifier.log"; exit 1
fi
"${V[@]}" ca export >"$st/ca.pem"
token="$("${V[@]}" token create --site acme-fra1 --ttl 1h)"
mkdir -m 700 "$st/agent"
cat >"$st/agent/agent.toml" <<TOML
verifier = "127.0.0.1:17443"
state_dir = "$st/agent"
interval_seconds = 3
TOML
"${A[@]}" enroll --verifier 127.0.0.1:17444 --token "$token" --ca "$st/ca.pem" --state-dir "$st/agent"
echo "enroll: exit $?"
"${A[@]}" run --config "$st/agent/agent.toml" >"$st/res/agent.log" 2>&1 &
apid=$!
sleep 10
kill -TERM "$apid"; wait "$apid"; echo "agent run: exit $? after SIGTERM"
"${A[@]}" once --config "$st/agent/agent.toml" --out "$st/once.dsse"; echo "once: exit $?"
"${V[@]}" ingest --json "$st/once.dsse" >"$st/res/ingest.json"; echo "ingest: exit $?"
"${V[@]}" fleet --json >"$st/res/fleet.json"
"${V[@]}" agents --json >"$st/res/agents.json"
"${V[@]}" findings --json --all >"$st/res/findings.json"
"${V[@]}" log key --out "$st/res/verifier.pub"
"${V[@]}" log proof --index 0 --out "$st/res/0.tlog-proof"
"$py" -m attest.report_cli proof verify "$st/res/0.tlog-proof" --key "$st/res/verifier.pub"
echo "report proof verify: exit $?"
kill -TERM "$vpid"; wait "$vpid"; echo "verifier: exit $? after SIGTERM"
cat "$st/res/fleet.json"
tar czf "$out/e2e.tgz" -C "$st" res
