"""`gpu-attest-agent inventory [--json] [--simulate M.toml] [--nonce HEX]`: NVML's view, unsigned.

Runs without grpc, protobuf or cryptography installed (only `pynvml` and the standard library),
so it can be copied onto any GPU host: `PYTHONPATH=. python3 -m agent.inventory_cli --json`.

Exit codes: 0, 2, 3, 4 and 5 of `gpu-attest-agent`'s registry (agent/exits.py `AgentExit`,
`INVENTORY`), listed by `--help`: 2 is a usage error or an invalid machine file (--simulate).
A failure prints one line on stderr; with --json the document (with its `status`) is still
printed on stdout, except for exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from agent.exits import INVENTORY, AgentExit, exit_code_for_inventory
from agent.machine_file import SimulatedHost
from agent.readings import NONCE_LEN
from agent.render import inventory_to_json
from agent.simulate import SimulatedInventory
from attest import model
from attest.errors import MachineFileError
from attest.model import Unavailable
from attest.text import escape

_WHAT: Final = {
    model.InventoryState.LIBRARY_NOT_FOUND: "NVML library libnvidia-ml.so.1 not found",
    model.InventoryState.DRIVER_NOT_LOADED: "NVIDIA driver not loaded",
    model.InventoryState.ERROR: "NVML error",
}
_PROG: Final = "gpu-attest-agent inventory"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _nonce(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("must be hexadecimal") from exc
    if len(raw) != NONCE_LEN:
        raise argparse.ArgumentTypeError(f"must be {NONCE_LEN} bytes ({2 * NONCE_LEN} hex digits)")
    return raw


def _parser() -> _Parser:
    parser = _Parser(
        prog=_PROG,
        description="Print what NVML sees on this host (unsigned).",
        epilog=AgentExit.epilog(INVENTORY),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the stable JSON document")
    parser.add_argument("--simulate", metavar="M.toml", help="read a simulated machine file")
    parser.add_argument(
        "--nonce",
        type=_nonce,
        metavar="HEX",
        help="request GPU attestation reports bound to this 32-byte nonce",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; `argv` are the arguments after `inventory` (a leading one is skipped)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["inventory"]:
        args_in = args_in[1:]
    try:
        args = _parser().parse_args(args_in)
    except _UsageError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return AgentExit.CONFIG
    except SystemExit as exc:  # --help
        return AgentExit.CONFIG if exc.code else AgentExit.OK
    host: SimulatedHost | None = None
    if args.simulate:
        try:
            source = SimulatedInventory.from_file(args.simulate)
        except MachineFileError as exc:
            print(f"{_PROG}: error: {exc}", file=sys.stderr)
            return AgentExit.CONFIG
        host = source.machine.host
        inventory = source.collect(args.nonce)
    else:
        try:
            # Imported here so that --simulate works where pynvml is not installed.
            from agent.nvml import NvmlInventory  # noqa: PLC0415
        except ImportError as exc:
            print(f"{_PROG}: error: pynvml (nvidia-ml-py) not importable: {exc}", file=sys.stderr)
            return AgentExit.NO_LIBRARY
        with NvmlInventory() as nvml:
            inventory = nvml.collect(args.nonce)
    status = inventory.status
    if status.state is not model.InventoryState.OK:
        print(f"{_PROG}: error: {_WHAT[status.state]}: {escape(status.detail)}", file=sys.stderr)
    if args.json:
        print(json.dumps(inventory_to_json(inventory, host), indent=2))
    elif status.state is model.InventoryState.OK:
        print(render_table(inventory))
    return exit_code_for_inventory(status.state)


def _cell(reading: object) -> str:
    """One table cell; what the driver reported is escaped (attest/text.py): a driver that
    is not what it claims must not drive the operator's terminal."""
    if isinstance(reading, Unavailable):
        return f"n/a ({escape(reading.reason)})"
    return escape(str(reading))


def render_table(inventory: model.Inventory) -> str:
    """The human view: a driver line, then one row per GPU."""
    driver = inventory.driver
    versions = (
        f"driver {_cell(driver.driver_version)}  NVML {_cell(driver.nvml_version)}  "
        f"CUDA {_cell(driver.cuda_driver_version)}"
    )
    lines = [f"{versions}  GPUs {inventory.status.device_count}"]
    rows = [("IDX", "STATE", "UUID", "NAME", "BUS ID", "SERIAL", "MEMORY MiB", "VBIOS", "CC")]
    for gpu in inventory.gpus:
        memory = gpu.memory_total_bytes
        cc = gpu.cc
        rows.append(
            (
                str(gpu.index),
                gpu.state.value,
                _cell(gpu.uuid),
                _cell(gpu.name),
                _cell(gpu.pci.bus_id if isinstance(gpu.pci, model.PciInfo) else gpu.pci),
                _cell(gpu.serial),
                str(memory // 2**20) if isinstance(memory, int) else _cell(memory),
                _cell(gpu.vbios_version),
                ("on" if cc.enabled else "off")
                if isinstance(cc, model.ConfidentialComputing)
                else _cell(cc),
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
