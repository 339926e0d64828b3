#!/bin/bash
# The agent's sandbox on a real GPU host, where the CPU-only tests (test_sandbox.py) cannot
# reach: which /proc/devices groups the driver registers (the unit's DeviceAllow=char-*), the
# node and MIG-capability modes, whether libnvidia-ml needs an executable stack (which
# MemoryDenyWriteExecute would refuse), and the agent's real NVML inventory
# (agent.inventory_cli) as root, as an unprivileged user, and as that user under the unit's
# seccomp rules (W^X, and W^X plus the unit's SystemCallFilter allow list).
#
# Prepare on the build machine (needs gcc with static glibc and systemd-analyze), then run on
# the GPU host from the repository root with build/device carried along:
#   tests/packaging/device_check.sh --prepare
#   OUT=/some/dir tests/packaging/device_check.sh
# Results: $OUT/device_check.txt (summary) and inventory JSON per run (contains serials: do
# not commit as is).
set -u

if [ "${1:-}" = "--prepare" ]; then
    set -e
    mkdir -p build/device
    .venv/bin/python - <<'EOF'
import subprocess
from pathlib import Path

from tests.packaging.test_sandbox import allowed_syscalls, syscall_groups

out = Path("build/device")
allow = allowed_syscalls(Path("systemd/gpu-attest-agent.service"), syscall_groups())
(out / "allowed.h").write_text(
    "".join(f"#ifdef __NR_{n}\n__NR_{n},\n#endif\n" for n in sorted(allow))
)
cc = ["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror"]
src = "tests/packaging/seccomp_exec.c"
subprocess.run([*cc, "-DALLOW_LIST", f"-I{out}", "-o", str(out / "filter_exec_agent"), src], check=True)
subprocess.run([*cc, "-o", str(out / "mdwe_exec"), src], check=True)
EOF
    cp build/wheelhouse/nvidia_ml_py-*.whl build/device/
    exit 0
fi

OUT="${OUT:-/tmp/device-check}"
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.txt") 2>&1

section() { printf '\n== %s\n' "$*"; }

section host
uname -r
head -2 /etc/os-release
id
section "service manager"
echo "PID 1: $(cat /proc/1/comm)"
if [ -d /run/systemd/system ]; then echo "systemd is PID 1"; else echo "systemd is not PID 1"; fi
section "/proc/devices groups (DeviceAllow=char-...)"
grep -i nvidia /proc/devices
section "device nodes"
ls -l /dev/nvidia* 2>&1
ls -l /dev/nvidia-caps/ 2>&1
section "MIG capability files"
find /proc/driver/nvidia/capabilities -type f 2>/dev/null | head -8 | while read -r f; do
    echo "$f: $(tr '\n' ' ' < "$f")"
done
section "DMI attributes"
for f in /sys/devices/virtual/dmi/id/{sys_vendor,product_name,product_serial,product_uuid,board_serial}; do
    [ -e "$f" ] && ls -l "$f"
done
section "libnvidia-ml.so.1 (an executable stack or text relocations break W^X)"
lib="$(ldconfig -p | awk '/libnvidia-ml\.so\.1 /{print $NF; exit}')"
echo "$lib"
if [ -n "$lib" ] && command -v readelf >/dev/null; then
    readelf -lW "$lib" | grep -E 'GNU_STACK' || true
    readelf -dW "$lib" | grep -E 'TEXTREL' || echo "no TEXTREL"
fi
section python
# The system interpreter: the service accounts cannot reach a per-user one (pyenv under /root).
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
echo "$PY: $("$PY" --version 2>&1)"
command -v strace setpriv || true

WORK=/tmp/gpuprobe
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r agent attest "$WORK/"
cp build/device/mdwe_exec build/device/filter_exec_agent build/device/nvidia_ml_py-*.whl "$WORK/"
chmod -R a+rX "$WORK"
WHEEL="$(ls "$WORK"/nvidia_ml_py-*.whl)"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all)

inventory() {
    local label="$1"
    shift
    (cd "$WORK" && PYTHONPATH="$WORK:$WHEEL" timeout 180 "$@" "$PY" -m agent.inventory_cli --json \
        > "$OUT/inventory_$label.json" 2> "$OUT/inventory_$label.err")
    echo "-- $label: rc=$? $(head -c 300 "$OUT/inventory_$label.err")"
}

section "agent inventory (real NVML)"
inventory root
inventory nobody "${NOBODY[@]}"
inventory nobody_wx "${NOBODY[@]}" "$WORK/mdwe_exec"
inventory nobody_filter "${NOBODY[@]}" "$WORK/filter_exec_agent"
if command -v strace >/dev/null; then
    inventory nobody_strace strace -f -qq -u nobody -o "$OUT/strace_agent.txt"
fi

section "differences between runs (paths whose values differ; serials/UUIDs not printed)"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])

def flat(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flat(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from flat(value, f"{path}[{i}]")
    else:
        yield path, node

runs = {}
for f in sorted(out.glob("inventory_*.json")):
    try:
        runs[f.stem.removeprefix("inventory_")] = dict(flat(json.loads(f.read_text())))
    except ValueError as exc:
        print(f"{f.name}: not JSON ({exc})")
base = runs.get("root", {})
print("root status:", {k: v for k, v in base.items() if k.startswith(".status")})
print("fields:", len(base))
for label, fields in runs.items():
    if label == "root":
        continue
    differ = sorted(p for p in set(base) | set(fields) if base.get(p) != fields.get(p))
    volatile = ("time", "temperature", "power_usage", "utilization", "uptime", "clock")
    differ = [p for p in differ if not any(v in p.lower() for v in volatile)]
    print(f"{label}: {len(differ)} differing fields")
    for p in differ[:40]:
        show = lambda v: v if not isinstance(v, str) or len(v) < 24 else v[:8] + "..."
        print(f"   {p}: root={show(base.get(p))!r} {label}={show(fields.get(p))!r}")
EOF

if [ -f "$OUT/strace_agent.txt" ]; then
    section "system calls made by the NVML inventory"
    sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$OUT/strace_agent.txt" | sort | uniq -c | sort -rn \
        > "$OUT/strace_agent_counts.txt"
    tr -s ' ' < "$OUT/strace_agent_counts.txt" | cut -d' ' -f3 | tr '\n' ' '
    echo
    grep -E 'EPERM|EACCES' "$OUT/strace_agent.txt" | grep -v ENOENT | head -20
fi
rm -rf "$WORK"
