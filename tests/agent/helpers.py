"""Helpers for the agent tests: an enrolled state dir without a verifier, a simulated machine."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from agent.identity import IDENTITY_FILE, KEY_FILE, VERIFIER_KEY_FILE
from attest.files import write_secret_file
from attest.keys import SoftwareSigner, load_or_create_private_key

MACHINE_8X_H100 = """
[host]
hostname = "gpu-node-017"
machine_id = "4c4c4544004b4d1080384ac04f4d3432"
site = "acme-fra1"

[[gpu]]
model = "H100-SXM"
count = 8
uuid_seed = "node-017"
"""


@dataclass(frozen=True)
class Enrolled:
    state_dir: Path
    agent: SoftwareSigner
    verifier: SoftwareSigner
    agent_id: str


def enrolled_state_dir(
    state_dir: Path, agent_id: str = "agent-test-1", verifier_address: str = "127.0.0.1:1"
) -> Enrolled:
    """The files `gpu-attest-agent enroll` would leave, with a verifier key the test holds."""
    agent = load_or_create_private_key(state_dir / KEY_FILE)
    verifier = SoftwareSigner.generate()
    write_secret_file(state_dir / VERIFIER_KEY_FILE, verifier.public_key.to_pem())
    write_secret_file(
        state_dir / IDENTITY_FILE,
        (
            f'agent_id = "{agent_id}"\nsite_id = "acme-fra1"\nverifier = "{verifier_address}"\n'
        ).encode(),
    )
    return Enrolled(state_dir, agent, verifier, agent_id)


def machine_file(directory: Path, text: str = MACHINE_8X_H100) -> Path:
    path = directory / "machine.toml"
    path.write_text(text, encoding="utf-8")
    return path


class LineReader:
    """Collects a child's output lines in a thread, so tests can wait for one without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self.lines.put(line.rstrip("\n"))
        except ValueError:  # the test closed the pipe while we read: its child is gone
            return

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """The first line (from now on) containing `needle`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {needle!r}; saw: {self.seen[-20:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line


def self_signed_cert(signer: SoftwareSigner) -> bytes:
    """A one-day self-signed certificate (PEM) for `signer`'s key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agt-1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(signer.private_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(signer.private_key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)
