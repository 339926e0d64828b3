"""One attestation cycle: collect, build, sign, spool. Shared by `run`, `once` and the benchmark.

The collection (NVML or simulator, host facts, posture) is the shell; building and signing are
the pure functions of `agent.evidence`; the spool makes the result durable before it is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from agent.evidence import build_evidence, inventory_fingerprint, sign_evidence
from agent.hostfacts import collect_host_facts
from agent.ports import InventorySource
from agent.posture import NOT_COLLECTED, PostureFacts, evaluate
from agent.posture_collect import collect_firewall, collect_posture_facts, collect_process_names
from agent.spool import Spool, SpoolEntry
from attest.keys import Signer
from attest.model import HostFacts, Inventory, Reading

if TYPE_CHECKING:
    from agent.landmarks import LandmarkBook

#: Firewall rules are read by forking nft/iptables, and without auditd's pid file finding the
#: audit daemon means reading every /proc/*/comm: both are refreshed on this slower cadence.
SLOW_FACTS_REFRESH = timedelta(minutes=5)


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
        landmarks: LandmarkBook | None = None,
    ) -> None:
        self.settings = settings
        self._landmarks = landmarks
        self._signer = signer
        self._spool = spool
        self._inventory = inventory
        self._attested: Inventory | None = None
        self._slow: tuple[Reading[str], Reading[str], Reading[frozenset[str]]] | None = None
        self._slow_at: datetime | None = None

    def use_signer(self, signer: Signer) -> None:
        """Sign from the next envelope on with `signer` (a key rotation's new key)."""
        self._signer = signer

    @property
    def signer(self) -> Signer:
        """The key evidence is signed by now (it changes with a key rotation)."""
        return self._signer

    def spool_depth(self) -> int:
        return self._spool.depth()

    def collect_inventory(self, cc_nonce: bytes | None) -> Inventory:
        return self._inventory.collect(cc_nonce)

    def inventory_changed(self) -> bool:
        """Poll the inventory; True when it differs from the last one attested."""
        if self._attested is None:
            return False
        current = self._inventory.collect(None)
        return inventory_fingerprint(current) != inventory_fingerprint(self._attested)

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
        facts = collect_posture_facts(
            s.host_root, s.state_dir, s.key_file, with_commands=False, scan_processes=False
        )
        stale = self._slow_at is None or now - self._slow_at >= SLOW_FACTS_REFRESH
        if self._slow is None or stale:
            nft, iptables = collect_firewall(s.host_root)
            self._slow = (nft, iptables, collect_process_names(s.host_root))
            self._slow_at = now
        nft, iptables, names = self._slow
        if facts.process_names is NOT_COLLECTED:
            facts = dataclasses.replace(facts, process_names=names)
        return dataclasses.replace(facts, nft_ruleset=nft, iptables_rules=iptables)

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
        landmarks = () if self._landmarks is None else self._landmarks.pending()

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
                landmarks=landmarks,
            )
            return sign_evidence(evidence, self._signer)

        entry = self._spool.append(build, now)
        self._attested = inventory
        if self._landmarks is not None:
            # Spooled, so the stream will deliver them: no later evidence carries them again.
            self._landmarks.carried(landmarks)
        return entry
