"""Replace the identities in a GPU capture with deterministic fakes, so it can be committed.

    python3 scripts/scrub_capture.py --out-dir DIR inventory.json [nvidia-smi.xml ...]

Inputs are `gpu-attest-agent inventory --json` documents (.json) and `nvidia-smi -q -x` output
(.xml). One run scrubs all of them with one mapping, so a GPU keeps the same fake identity in
every file, and equal values stay equal (the two GPUs of a GB200 module keep sharing a serial).
Fakes are numbered by first appearance, never derived from the original (a hash of a 13-digit
serial could be brute-forced). Scrubbed: GPU and MIG UUIDs, serials, fabric cluster UUIDs,
PDIs, fabric GUIDs, chassis serials, host names and machine ids; certificate chains and
attestation reports (which embed per-chip identities) become `{"unavailable": "Scrubbed"}`.
Standard library only: it runs on the GPU host beside the capture.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
_XML_TAGS = {
    "uuid": "uuid",
    "serial": "serial",
    "cluster_uuid": "uuid",
    "chassis_serial_number": "serial",
    "pdi": "hex",
    "gpu_pdi": "hex",
    "gpu_fabric_guid": "hex",
    "ib_guid": "hex",
}
_XML = re.compile(r"<(?P<tag>%s)>(?P<value>[^<]*)</(?P=tag)>" % "|".join(_XML_TAGS))  # noqa: UP031
_BLOBS = ("attestation_report", "certificate_chain", "cec_attestation_report")


class Scrubber:
    """Maps each original value to a fake, the same fake every time it recurs."""

    def __init__(self) -> None:
        self.fakes: dict[tuple[str, str], str] = {}

    def fake(self, kind: str, value: str) -> str:
        if value in {"", "N/A", ZERO_UUID} or value.startswith("unknown-gpu-index-"):
            return value
        key = (kind, value)
        if key not in self.fakes:
            n = 1 + sum(1 for k in self.fakes if k[0] == kind)
            self.fakes[key] = self._make(kind, value, n)
        return self.fakes[key]

    @staticmethod
    def _make(kind: str, value: str, n: int) -> str:
        if kind == "uuid":
            prefix = value.split("-", 1)[0] + "-" if value[:4] in {"GPU-", "MIG-"} else ""
            return f"{prefix}00000000-0000-4000-8000-{n:012x}"
        if kind == "serial":
            return f"99999{n:08d}"
        if kind == "hex":
            return f"0x{n:016x}"
        return f"scrubbed-{kind}-{n}"

    def inventory(self, doc: dict[str, Any]) -> dict[str, Any]:
        for gpu in doc.get("gpus", []):
            gpu["uuid"] = self.fake("uuid", gpu["uuid"])
            if isinstance(gpu.get("serial"), str):
                gpu["serial"] = self.fake("serial", gpu["serial"])
            mig = gpu.get("mig")
            for device in mig.get("devices", []) if isinstance(mig, dict) else []:
                device["uuid"] = self.fake("uuid", device["uuid"])
            fabric = gpu.get("fabric")
            if isinstance(fabric, dict) and isinstance(fabric.get("cluster_uuid"), str):
                fabric["cluster_uuid"] = self.fake("uuid", fabric["cluster_uuid"])
            cc = gpu.get("cc")
            if isinstance(cc, dict):
                for blob in _BLOBS:
                    if isinstance(cc.get(blob), str):
                        cc[blob] = {"unavailable": "Scrubbed"}
        host = doc.get("host")
        if isinstance(host, dict):
            for key in ("hostname", "machine_id"):
                if isinstance(host.get(key), str):
                    host[key] = self.fake(key, host[key])
        return doc

    def xml(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            tag, value = match["tag"], match["value"]
            return f"<{tag}>{self.fake(_XML_TAGS[tag], value.strip())}</{tag}>"

        return _XML.sub(swap, text)


def suggested_name(doc: dict[str, Any]) -> str:
    """`real-<model>.json` after the first GPU's name, e.g. real-nvidia-h100-80gb-hbm3.json."""
    names = [g["name"] for g in doc.get("gpus", []) if isinstance(g.get("name"), str)]
    slug = re.sub(r"[^a-z0-9]+", "-", (names[0] if names else "unknown").lower()).strip("-")
    return f"real-{slug}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("inputs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    scrubber = Scrubber()
    for path in args.inputs:
        target = args.out_dir / path.name
        if path.suffix == ".json":
            doc = scrubber.inventory(json.loads(path.read_text(encoding="utf-8")))
            target.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            print(f"{target} (commit as tests/agent/nvml/fixtures/{suggested_name(doc)})")
        elif path.suffix == ".xml":
            target.write_text(scrubber.xml(path.read_text(encoding="utf-8")), encoding="utf-8")
            print(target)
        else:
            print(f"skipped {path}: not .json or .xml", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
