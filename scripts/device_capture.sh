#!/usr/bin/env bash
# Capture what NVML sees on a real GPU host, for a scrubbed test fixture.
#
# Run from the repository root on the GPU machine (python3 with nvidia-ml-py; grpc, protobuf
# and cryptography are not needed):   OUT=/some/dir scripts/device_capture.sh
# Writes to $OUT: inventory.json (raw), inventory-nonce.json (CC reports requested with a fixed
# nonce), *.stderr and *.rc, timing.json, nvidia-smi.xml, versions.txt, and scrubbed/ (the same
# files with identities replaced: commit scrubbed/inventory.json into
# tests/agent/nvml/fixtures/ as real-<model>.json, the name the scrubber prints).
set -u
out="${OUT:-./capture}"
py="${PYTHON:-python3}"
nonce="00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
mkdir -p "$out"
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}"

{
  "$py" --version 2>&1
  "$py" -c 'import importlib.metadata as m, pynvml
try: print("nvidia-ml-py", m.version("nvidia-ml-py"))
except m.PackageNotFoundError: print("nvidia-ml-py (no metadata)", pynvml.__file__)' 2>&1
} | tee "$out/versions.txt"

run_inventory() {  # name, extra arguments...
  local name=$1; shift
  "$py" -m agent.inventory_cli --json "$@" >"$out/$name.json" 2>"$out/$name.stderr"
  echo $? >"$out/$name.rc"
  echo "$name: exit $(cat "$out/$name.rc") $(head -c 300 "$out/$name.stderr")"
}
run_inventory inventory
run_inventory inventory-nonce --nonce "$nonce"

# CPU and wall time of a collection cycle (the first includes nvmlInit).
"$py" - >"$out/timing.json" 2>"$out/timing.stderr" <<'PY'
import json, statistics, time
from agent.nvml import NvmlInventory
nvml = NvmlInventory()
walls, cpus = [], []
for _ in range(6):
    w, c = time.perf_counter(), time.process_time()
    inventory = nvml.collect()
    walls.append((time.perf_counter() - w) * 1e3)
    cpus.append((time.process_time() - c) * 1e3)
nvml.close()
print(json.dumps({"gpus": len(inventory.gpus), "first_wall_ms": round(walls[0], 2),
                  "median_wall_ms": round(statistics.median(walls[1:]), 2),
                  "median_cpu_ms": round(statistics.median(cpus[1:]), 2)}))
PY
echo "timing: $(cat "$out/timing.json" 2>/dev/null) $(head -c 300 "$out/timing.stderr")"

inputs=("$out/inventory.json" "$out/inventory-nonce.json")
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -q -x >"$out/nvidia-smi.xml" 2>"$out/nvidia-smi.stderr"
  echo "nvidia-smi: exit $?"
  inputs+=("$out/nvidia-smi.xml")
else
  echo "nvidia-smi: not found"
fi
"$py" scripts/scrub_capture.py --out-dir "$out/scrubbed" "${inputs[@]}"
