"""A child process for the crash tests: produce real signed evidence into a spool, forever.

    python -m tests.agent.spool_worker STATE_DIR MACHINE [--fsize BYTES]

Prints `committed SEQ` after each append returns (the entry is then durable); the parent kills
it with SIGKILL at arbitrary moments. With --fsize, RLIMIT_FSIZE is lowered after the spool is
opened, so that writes fail like on a full disk; the worker then prints the error and exits 3.
"""

from __future__ import annotations

import resource
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from agent.attestor import Attestor, AttestorSettings
from agent.identity import KEY_FILE, load_identity
from agent.simulate import SimulatedInventory
from agent.spool import Spool
from attest.errors import StoreError
from attest.keys import load_private_key


def main(argv: list[str]) -> int:
    state_dir, machine = Path(argv[0]), Path(argv[1])
    identity = load_identity(state_dir)
    signer = load_private_key(state_dir / KEY_FILE)
    spool = Spool.open(state_dir, 1 << 30)
    settings = AttestorSettings(
        identity.agent_id, identity.site_id, state_dir, state_dir, state_dir / KEY_FILE
    )
    attestor = Attestor(settings, signer, spool, SimulatedInventory.from_file(machine))
    if len(argv) > 3 and argv[2] == "--fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(argv[3])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    print("ready", flush=True)
    while True:
        try:
            entry = attestor.produce(b"", datetime.now(UTC))
        except StoreError as exc:
            print(f"error {exc.code} {exc}", flush=True)
            return 3
        print(f"committed {entry.seq}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
