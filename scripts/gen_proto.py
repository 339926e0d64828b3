"""Regenerate the committed protobuf and gRPC code under attest/v1/ from proto/.

Usage: python scripts/gen_proto.py [--check]

--check regenerates into a temporary directory and exits 1 when the committed files differ,
which is what the freshness test and CI run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("attest") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every .proto under proto/attest/v1 into out_root; return the files written."""
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files found")
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    # The mypy-protobuf plugins are console scripts installed beside this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out_dir = out_root / PACKAGE_DIR
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target_dir = ROOT / PACKAGE_DIR
        if opts.check:
            stale = [
                p.name
                for p in fresh
                if not (target_dir / p.name).exists()
                or not filecmp.cmp(p, target_dir / p.name, shallow=False)
            ]
            committed = {
                p.name for p in target_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES)
            }
            extra = sorted(committed - {p.name for p in fresh})
            if stale or extra:
                print(f"generated code is stale: {stale + extra}; run scripts/gen_proto.py")
                return 1
            print("generated code is fresh")
            return 0
        target_dir.mkdir(parents=True, exist_ok=True)
        for p in fresh:
            shutil.copyfile(p, target_dir / p.name)
            print(f"wrote {PACKAGE_DIR / p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
