"""One attestation cycle: collect, build, sign, spool. Shared by `run`, `once` and the benchmark.

The collection (NVML or simulator, host facts, posture) is the shell; building and signing are
the pure functions of `agent.evidence`; the spool makes the result durable before it is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from agent.evidence import build_evidence, inventory_fingerprint, sign_evidence
from agent.hostfacts import collect_host_facts
from agent.ports import InventorySource
from agent.posture import PostureFacts, evaluate
from agent.posture_collect import collect_firewall, collect_posture_facts
from agent.spool import Spool, SpoolEntry
from attest.keys import Signer
from attest.model import HostFacts, Inventory, Reading

#: Firewall rules are read by forking nft/iptables; they rarely change, so refresh them slowly.
FIREWALL_REFRESH = timedelta(minutes=10)


@dataclass(frozen=True)
class HostOverride:
    """Identity of a simulated host (the `[host]` table of a machine file)."""

    hostname: str | None = None
    machine_id: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class AttestorSettings:
    agent_id: str
    site_id: str
    host_root: Path
    state_dir: Path
    key_file: Path
    host_override: HostOverride = HostOverride()


class Attestor:
    """Produces signed, spooled evidence. Not thread-safe."""

    def __init__(
        self,
        settings: AttestorSettings,
        signer: Signer,
        spool: Spool,
        inventory: InventorySource,
    ) -> None:
        self.settings = settings
        self._signer = signer
        self._spool = spool
        self._inventory = inventory
        self._fingerprint: bytes | None = None
        self._firewall: tuple[Reading[str], Reading[str]] | None = None
        self._firewall_at: datetime | None = None

    def spool_depth(self) -> int:
        return self._spool.depth()

    def collect_inventory(self, cc_nonce: bytes | None) -> Inventory:
        return self._inventory.collect(cc_nonce)

    def inventory_changed(self) -> bool:
        """Poll the inventory; True when it differs from the last one attested."""
        fingerprint = inventory_fingerprint(self._inventory.collect(None))
        return self._fingerprint is not None and fingerprint != self._fingerprint

    def host_facts(self) -> HostFacts:
        facts = collect_host_facts(self.settings.host_root)
        override = self.settings.host_override
        if override.hostname is not None:
            facts = dataclasses.replace(facts, hostname=override.hostname)
        if override.machine_id is not None:
            facts = dataclasses.replace(facts, machine_id=override.machine_id)
        return facts

    def posture_facts(self, now: datetime) -> PostureFacts:
        s = self.settings
        facts = collect_posture_facts(s.host_root, s.state_dir, s.key_file, with_commands=False)
        if (
            self._firewall is None
            or self._firewall_at is None
            or (now - self._firewall_at >= FIREWALL_REFRESH)
        ):
            self._firewall = collect_firewall(s.host_root)
            self._firewall_at = now
        return dataclasses.replace(
            facts, nft_ruleset=self._firewall[0], iptables_rules=self._firewall[1]
        )

    def produce(
        self, nonce: bytes, now: datetime, inventory: Inventory | None = None
    ) -> SpoolEntry:
        """Collect (unless `inventory` is given), build, sign and durably spool one attestation.

        Raises SpoolFullError when the spool is full, StoreError on other spool failures.
        """
        if inventory is None:
            inventory = self.collect_inventory(nonce or None)
        host = self.host_facts()
        posture = evaluate(self.posture_facts(now), inventory)
        site = self.settings.site_id or self.settings.host_override.site or ""

        def build(seq: int, prev_hash: bytes) -> bytes:
            evidence = build_evidence(
                agent_id=self.settings.agent_id,
                seq=seq,
                prev_hash=prev_hash,
                nonce=nonce,
                now=now,
                host=host,
                inventory=inventory,
                site_id=site,
                posture=posture,
            )
            return sign_evidence(evidence, self._signer)

        entry = self._spool.append(build, now)
        self._fingerprint = inventory_fingerprint(inventory)
        return entry
