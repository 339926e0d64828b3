#!/bin/bash
# Build the Debian packages of gpu-attest with dpkg-deb alone (no debhelper, no network beyond
# the pip registry that pip is configured with, or none at all with --wheel-dir):
#
#   gpu-attest-agent_<version>_<arch>.deb     the node daemon
#   gpu-attest-verifier_<version>_<arch>.deb  the verifier service and gpu-attest-report
#   gpu-attest-landmark_<version>_<arch>.deb  the landmark service (docs/protocol.md §12): its
#                                             unit, account and conffile; the command is the
#                                             verifier package's, which it depends on
#
# Each package carries its own virtualenv under /opt/gpu-attest/<side>, built from the project
# wheel with the system interpreter (the venv is tied to that interpreter's minor version,
# hence the python3 (<< next minor) dependency), plus the hardened unit, sysusers.d and
# tmpfiles.d snippets, a conffile and maintainer scripts. See packaging/README.md.
set -euo pipefail
umask 022

usage() {
    cat <<'EOF'
usage: packaging/build-deb.sh [options]
  --package agent|verifier|landmark|all
                                which package(s) to build (default: all)
  --out DIR                     where the .deb files go (default: dist/)
  --wheel-dir DIR               install offline: pip --no-index --find-links DIR
                                (fill it with `make wheelhouse`)
  --python PATH                 target interpreter (default: /usr/bin/python3)
  --version VERSION             package version (default: from pyproject.toml)
  --compression xz|gzip|zstd|none  dpkg-deb compressor (default: xz)
  --stage-only DIR              lay out the package trees under DIR/<package> with every
                                file except the virtualenv, and stop before dpkg-deb
  --maintainer "NAME <MAIL>"    Maintainer: field
  --fill-wheel-dir DIR          only download every wheel a build needs (runtime
                                dependencies of both sides, setuptools, wheel) into DIR,
                                for later offline builds with --wheel-dir DIR
EOF
}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/dist"
PY=/usr/bin/python3
WHEEL_DIR=""
VERSION=""
COMPRESSION=xz
STAGE_ONLY=""
PACKAGES="agent verifier landmark"
MAINTAINER="gpu-attest maintainers <gpu-attest@example.org>"
FILL_WHEEL_DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --package)
            case "${2:-}" in
                agent|verifier|landmark) PACKAGES="$2" ;;
                all) PACKAGES="agent verifier landmark" ;;
                *) echo "build-deb: --package takes agent, verifier, landmark or all" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --wheel-dir) WHEEL_DIR="$(cd "$2" && pwd)"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        --compression) COMPRESSION="$2"; shift 2 ;;
        --stage-only) STAGE_ONLY="$2"; shift 2 ;;
        --maintainer) MAINTAINER="$2"; shift 2 ;;
        --fill-wheel-dir) FILL_WHEEL_DIR="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-deb: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "build-deb: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb is required"
[ -x "$PY" ] || die "$PY is not an executable interpreter"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than 3.11"
PY_MINOR="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
PY_NEXT="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')"
ARCH="$(dpkg --print-architecture)"

if [ -z "$VERSION" ]; then
    VERSION="$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
fi
# PEP 440 pre-releases sort before the release; in Debian that is what "~" does.
DEB_VERSION="$(printf '%s' "$VERSION" | sed -E 's/\.?(a|b|rc|dev)([0-9]+)/~\1\2/g')"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-attest-deb.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PIP_SOURCE_ARGS=()
if [ -n "$WHEEL_DIR" ]; then
    PIP_SOURCE_ARGS=(--no-index --find-links "$WHEEL_DIR")
fi

# --- per-package facts ----------------------------------------------------------------------
package_facts() {
    # The landmark alone has no venv of its own: DEPENDS names the package that provides it.
    DEPENDS=""; OWN_VENV=yes
    case "$1" in
        agent)
            PKG=gpu-attest-agent; EXTRA=agent; ACCOUNT=gpu-attest
            STATEDIR=/var/lib/gpu-attest; SYSUSERS=gpu-attest.conf; TMPFILES=gpu-attest.conf
            CONFFILE=/etc/gpu-attest/agent.toml; EXAMPLE="$ROOT/examples/agent.toml"
            COMMANDS="gpu-attest-agent"; OTHER_COMMAND=gpu-attest-verifier; IMPORTS="agent attest grpc pynvml psutil cryptography"
            SUMMARY="gpu-attest agent: signed GPU inventory and posture evidence"
            LONG=" Runs on every GPU host as a sandboxed systemd service. Reads what the
 NVIDIA driver reports through NVML (GPU identities, MIG, NVLink fabric,
 health, confidential computing reports), host facts and safeguard posture,
 signs it with a key that never leaves the host, spools it durably and
 streams it over gRPC to a gpu-attest verifier." ;;
        verifier)
            PKG=gpu-attest-verifier; EXTRA=verifier; ACCOUNT=gpu-attest-verifier
            STATEDIR=/var/lib/gpu-attest-verifier; SYSUSERS=gpu-attest-verifier.conf
            TMPFILES=gpu-attest-verifier.conf
            CONFFILE=/etc/gpu-attest/verifier.toml; EXAMPLE="$ROOT/examples/verifier.toml"
            COMMANDS="gpu-attest-verifier gpu-attest-report"; OTHER_COMMAND=gpu-attest-agent
            IMPORTS="verifier attest grpc psycopg cryptography"
            SUMMARY="gpu-attest verifier: GPU evidence verification and compliance findings"
            LONG=" Accepts signed evidence from enrolled gpu-attest agents over mutually
 authenticated gRPC, keeps it in an append-only transparency log (SQLite or
 PostgreSQL), tracks the fleet and raises export-control compliance findings.
 Includes gpu-attest-report to check signed reports offline." ;;
        landmark)
            PKG=gpu-attest-landmark; EXTRA=verifier; ACCOUNT=gpu-attest-landmark
            STATEDIR=/var/lib/gpu-attest-landmark; SYSUSERS=gpu-attest-landmark.conf
            TMPFILES=gpu-attest-landmark.conf
            CONFFILE=/etc/gpu-attest/landmark.toml; EXAMPLE="$ROOT/examples/landmark.toml"
            COMMANDS=""; OTHER_COMMAND=""; IMPORTS=""; OWN_VENV=no
            DEPENDS="gpu-attest-verifier (= $DEB_VERSION)"
            SUMMARY="gpu-attest landmark: signed round-trip times for location checks"
            LONG=" A host with known coordinates that times signed round trips to gpu-attest
 agents with its own clock and signs the least of them, a bound on how far
 each agent can be (light in vacuum). Runs the landmark command of
 gpu-attest-verifier as a sandboxed systemd service of its own account." ;;
    esac
    SERVICE="$PKG.service"
    VENV_DEST="/opt/gpu-attest/$1"
}

# --- the project wheel, built from a copy of the tree so stale build/ output never leaks in ---
build_project_wheel() {
    local src="$WORK/src"
    mkdir -p "$src" "$WORK/wheels"
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
            | xargs -0 -r cp --parents -t "$src")
    else
        (cd "$ROOT" && tar -c --exclude=.venv --exclude=build --exclude=dist \
            --exclude='*.egg-info' --exclude=.git . ) | tar -x -C "$src"
    fi
    "$PY" -m venv "$WORK/tool"
    "$WORK/tool/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        "${PIP_SOURCE_ARGS[@]}" -w "$WORK/wheels" "$src"
    PROJECT_WHEEL="$(ls "$WORK"/wheels/gpu_attest-*.whl)"
}

# --- the virtualenv: build in the staging tree, then make it believe it lives in /opt ---------
build_venv() {
    local stage="$1" venv="$1$VENV_DEST"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
        --no-warn-script-location "${PIP_SOURCE_ARGS[@]}" "${PROJECT_WHEEL}[${EXTRA}]"
    "$venv/bin/python" -m pip check -q --disable-pip-version-check
    # shellcheck disable=SC2086 # IMPORTS is a word list
    "$venv/bin/python" -c "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" $IMPORTS
    # An installer inside a production venv is only attack surface.
    "$venv/bin/python" -m pip uninstall -q -y --disable-pip-version-check pip setuptools wheel 2>/dev/null || true
    rm -f "$venv"/bin/pip* "$venv"/bin/easy_install*
    # The wheel declares every side's commands; the other side's would only fail to import.
    rm -f "$venv/bin/$OTHER_COMMAND"
    find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
    rm -f "$venv"/lib/python*/site-packages/gpu_attest-*.dist-info/direct_url.json
    sed -i '/direct_url\.json/d' "$venv"/lib/python*/site-packages/gpu_attest-*.dist-info/RECORD
    # Shebangs, activate scripts and pyvenv.cfg name the build path; the venv's python itself
    # is a symlink to the absolute system interpreter, which is where it should point.
    grep -rlI --null -e "$stage" "$venv/bin" "$venv/pyvenv.cfg" \
        | xargs -0 -r sed -i "s#$stage##g"
    if grep -rqI -e "$stage" "$venv"; then
        die "build path left in the venv: $(grep -rlI -e "$stage" "$venv" | head -3)"
    fi
    record_bin_scripts "$venv"
    # Byte-code for the read-only /opt (ProtectSystem=strict): compiled for the final path,
    # checked against the source hash so it stays valid whatever mtimes dpkg restores.
    "$PY" -m compileall -q -s "$stage" -p / --invalidation-mode checked-hash "$venv/lib" >/dev/null
    local cmd
    for cmd in $COMMANDS; do
        [ -x "$venv/bin/$cmd" ] || die "$cmd missing from the venv"
    done
}

# pip wrote each dist's RECORD with the hashes of its bin/ scripts as they were before their
# shebang lost the (random) build path: recompute them, and drop the scripts removed above, so
# RECORD matches what ships and two builds of one commit are byte-identical.
record_bin_scripts() {
    "$PY" - "$1" <<'EOF'
import base64, csv, hashlib, io, sys
from pathlib import Path
venv = Path(sys.argv[1])
for record in venv.glob("lib/python*/site-packages/*.dist-info/RECORD"):
    rows = []
    for row in csv.reader(io.StringIO(record.read_text())):
        target = record.parent.parent / row[0]
        if row[0].startswith("../../../bin/"):
            if not target.exists():
                continue
            data = target.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            row = [row[0], "sha256=" + digest.decode(), str(len(data))]
        rows.append(row)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    record.write_text(out.getvalue())
EOF
}

# The lowest glibc every installed wheel runs on (manylinux_X_Y / manylinux2014 = 2.17 ...).
glibc_floor() {
    "$PY" - "$1" <<'EOF'
import re, sys
from pathlib import Path
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
floor = (2, 17)
for wheel in Path(sys.argv[1]).glob("lib/python*/site-packages/*.dist-info/WHEEL"):
    needs = []
    for line in wheel.read_text().splitlines():
        if not line.startswith("Tag:"):
            continue
        plat = line.split("-")[-1].strip()
        m = re.match(r"manylinux_(\d+)_(\d+)_", plat)
        if m:
            needs.append((int(m[1]), int(m[2])))
        for name, ver in LEGACY.items():
            if plat.startswith(name + "_"):
                needs.append(ver)
    if needs:
        floor = max(floor, min(needs))
print(f"{floor[0]}.{floor[1]}")
EOF
}

# The conffile must name the directory the unit makes writable (ReadWritePaths=, StateDirectory=):
# the example configs are shared with development, where one state_dir serves both sides.
pin_state_dir() {
    local file="$1"
    if grep -qE '^state_dir *=' "$file"; then
        sed -i -E "s#^state_dir *=.*#state_dir = \"$STATEDIR\"#" "$file"
    else
        sed -i "1i state_dir = \"$STATEDIR\"  # set by packaging: the unit's writable directory" "$file"
    fi
    "$PY" - "$file" "$STATEDIR" <<'EOF' || die "$file: state_dir is not $STATEDIR"
import sys, tomllib
sys.exit(tomllib.load(open(sys.argv[1], "rb")).get("state_dir") != sys.argv[2])
EOF
}

# --- the package tree: everything but the venv -----------------------------------------------
stage_files() {
    local stage="$1" doc="$1/usr/share/doc/$PKG"
    install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/systemd/system" \
        "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$doc" "$stage/etc/gpu-attest"
    install -m 0644 "$ROOT/systemd/$SERVICE" "$stage/usr/lib/systemd/system/$SERVICE"
    install -m 0644 "$ROOT/systemd/sysusers.d/$SYSUSERS" "$stage/usr/lib/sysusers.d/$SYSUSERS"
    install -m 0644 "$ROOT/systemd/tmpfiles.d/$TMPFILES" "$stage/usr/lib/tmpfiles.d/$TMPFILES"
    install -m 0644 "$ROOT/packaging/README.md" "$doc/README.md"
    install -m 0644 "$ROOT/packaging/copyright" "$doc/copyright"
    install -d "$stage/usr/share/lintian/overrides"
    sed "s#@PACKAGE@#$PKG#g; s#@CONFFILE@#${CONFFILE#/}#g" "$ROOT/packaging/lintian-overrides.in" \
        > "$stage/usr/share/lintian/overrides/$PKG"
    chmod 0644 "$stage/usr/share/lintian/overrides/$PKG"
    printf '%s (%s) unstable; urgency=medium\n\n  * Package built from the gpu-attest tree.\n\n -- %s  %s\n' \
        "$PKG" "$DEB_VERSION" "$MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" \
        | gzip -9n > "$doc/changelog.gz"
    chmod 0644 "$doc/changelog.gz"
    local conffile="" cmd script
    if [ -f "$EXAMPLE" ]; then
        # 0640 root:root in the archive; postinst hands the group to the service account.
        conffile="$CONFFILE"
        install -m 0640 "$EXAMPLE" "$stage$conffile"
        pin_state_dir "$stage$conffile"
        echo "$conffile" > "$stage/DEBIAN/conffiles"
        chmod 0644 "$stage/DEBIAN/conffiles"
    else
        echo "build-deb: $EXAMPLE does not exist; $PKG ships no $CONFFILE" >&2
    fi
    # Dangling until build_venv fills /opt; a stage-only tree shows where they will point.
    for cmd in $COMMANDS; do
        ln -s "$VENV_DEST/bin/$cmd" "$stage/usr/bin/$cmd"
    done
    for script in postinst prerm postrm; do
        sed -e "s#@PACKAGE@#$PKG#g" -e "s#@SERVICE@#$SERVICE#g" -e "s#@ACCOUNT@#$ACCOUNT#g" \
            -e "s#@STATEDIR@#$STATEDIR#g" -e "s#@SYSUSERS@#$SYSUSERS#g" \
            -e "s#@TMPFILES@#$TMPFILES#g" \
            -e "s#@CONFFILE@#$conffile#g" \
            "$ROOT/packaging/maintscripts/$script.in" > "$stage/DEBIAN/$script"
        chmod 0755 "$stage/DEBIAN/$script"
        if grep -q '@[A-Z]*@' "$stage/DEBIAN/$script"; then
            die "unsubstituted placeholder in $script"
        fi
    done
}

finish_package() {
    local stage="$1" libc="$2"
    # Modes lintian expects: directories and programs 0755, data 0644, shared objects 0644;
    # the conffile keeps its 0640.
    # Wheels ship stray exec bits (protobuf's modules); only the venv's commands keep one.
    find "$stage" -path "$stage/DEBIAN" -prune -o -type d -exec chmod 0755 {} +
    if [ -d "$stage/opt" ]; then
        find "$stage/opt" -type f -exec chmod 0644 {} +
        find "$stage/opt" -path '*/bin/*' -type f ! -name 'activate*' ! -name '*.ps1' \
            -exec chmod 0755 {} +
    fi
    local size
    size="$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)"
    cat > "$stage/DEBIAN/control" <<EOF
Package: $PKG
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: python3 (>= $PY_MINOR), python3 (<< $PY_NEXT), $libc${DEPENDS:+, $DEPENDS}
Recommends: systemd
Section: admin
Priority: optional
Description: $SUMMARY
$LONG
EOF
    chmod 0644 "$stage/DEBIAN/control"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 -r md5sum) > "$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/md5sums"
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# Every requirement of the distribution and of the agent and verifier extras, one a line.
runtime_requirements() {
    "$PY" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in ("agent", "verifier"):
    reqs += project["optional-dependencies"][extra]
print("\n".join(r for r in dict.fromkeys(reqs) if not r.startswith(project["name"])))
EOF
}

fill_wheel_dir() {
    mkdir -p "$1"
    "$PY" -m venv "$WORK/tool"
    runtime_requirements > "$WORK/requirements.txt"
    # Wheels only, for the target interpreter: the build then never compiles anything.
    "$WORK/tool/bin/python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
        -d "$1" -r "$WORK/requirements.txt" "setuptools>=69" wheel
    echo "filled $1 ($(find "$1" -name '*.whl' | wc -l) wheels)"
}

# --- main -------------------------------------------------------------------------------------
if [ -n "$FILL_WHEEL_DIR" ]; then
    fill_wheel_dir "$FILL_WHEEL_DIR"
    exit 0
fi
if [ -z "$STAGE_ONLY" ]; then
    build_project_wheel
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
else
    mkdir -p "$STAGE_ONLY"
fi

for side in $PACKAGES; do
    package_facts "$side"
    if [ -n "$STAGE_ONLY" ]; then
        stage="$(cd "$STAGE_ONLY" && pwd)/$PKG"
        rm -rf "$stage"
        stage_files "$stage"
        finish_package "$stage" "libc6"
        echo "staged $stage"
        continue
    fi
    stage="$WORK/stage/$PKG"
    stage_files "$stage"
    if [ "$OWN_VENV" = yes ]; then
        build_venv "$stage"
        finish_package "$stage" "libc6 (>= $(glibc_floor "$stage$VENV_DEST"))"
    else
        finish_package "$stage" "libc6"
    fi
    deb="$OUT/${PKG}_${DEB_VERSION}_${ARCH}.deb"
    dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$stage" "$deb" >/dev/null
    echo "built $deb"
done
