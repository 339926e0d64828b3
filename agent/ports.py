"""Ports of the agent: what the evidence builder needs from the outside world.

The real NVML adapter and the simulated machines both implement `InventorySource`; host facts
and posture collectors read from a root directory so that tests can point them at fixture trees.
"""

from __future__ import annotations

from typing import Protocol

from attest.model import Inventory


class InventorySource(Protocol):
    """Reads the GPUs of this host."""

    def collect(self, cc_nonce: bytes | None = None) -> Inventory:
        """Return what the driver sees now.

        `cc_nonce` (32 bytes) is the verifier's challenge: when a GPU is in confidential-computing
        mode its attestation report is requested bound to it. Never raises for a missing library
        or driver: that is reported in `Inventory.status`.
        """
        ...

    def close(self) -> None:
        """Release the driver (nvmlShutdown)."""
        ...
