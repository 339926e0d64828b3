"""One attestation cycle: collect, build, sign, spool. Shared by `run`, `once` and the benchmark.

The collection (NVML or simulator, host facts, posture) is the shell; building and signing are
the pure functions of `agent.evidence`; the spool makes the result durable before it is sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from agent.evidence import (
    AGENT_VERSION,
    build_evidence,
    inventory_fingerprint,
    repeat_digest,
    sign_evidence,
    sign_heartbeat,
)
from agent.hostfacts import collect_host_facts
from agent.ports import InventorySource
from agent.posture import NOT_COLLECTED, PostureFacts, evaluate
from agent.posture_collect import collect_firewall, collect_posture_facts, collect_process_names
from agent.spool import Spool, SpoolEntry
from attest.keys import Signer
from attest.model import Heartbeat, HostFacts, Inventory, Reading

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
    #: Full evidence at least this often; between, unchanged evidence goes as a heartbeat
    #: (docs/protocol.md §4.1). None: every attestation is full evidence.
    full_every: timedelta | None = None


@dataclass(frozen=True)
class _LastFull:
    """The last full evidence this process spooled: what a heartbeat may repeat."""

    seq: int
    envelope_hash: bytes
    digest: bytes  # agent.evidence.repeat_digest of what it carried
    at: datetime


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
        self._full: _LastFull | None = None

    def use_signer(self, signer: Signer) -> None:
        """Sign from the next envelope on with `signer` (a key rotation's new key)."""
        self._signer = signer

    @property
    def signer(self) -> Signer:
        """The key evidence is signed by now (it changes with a key rotation)."""
        return self._signer

    def spool_depth(self) -> int:
        return self._spool.depth()

    def forget_full(self) -> None:
        """Send full evidence next (the verifier refused a heartbeat: heartbeat-base-unknown)."""
        self._full = None

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

    def _heartbeat_base(self, digest: bytes, now: datetime) -> bytes | None:
        """The envelope hash a heartbeat may name now, or None: send full evidence.

        A heartbeat needs the last full evidence to be receipted (the verifier holds it as
        this agent's current one), to report what would be sent now, and to be younger than
        `full_every`. Anything else, a restart included, sends full evidence.
        """
        every, full = self.settings.full_every, self._full
        if every is None or full is None or full.digest != digest or now - full.at >= every:
            return None
        if self._spool.receipt(full.seq) is None:
            return None
        return full.envelope_hash

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
        digest = repeat_digest(inventory, host, posture, site)
        base = self._heartbeat_base(digest, now)

        def build(seq: int, prev_hash: bytes) -> bytes:
            if base is not None:
                heartbeat = Heartbeat(
                    agent_id=self.settings.agent_id,
                    seq=seq,
                    prev_hash=prev_hash,
                    nonce=nonce,
                    created_at=now.astimezone(UTC),
                    agent_version=AGENT_VERSION,
                    site_id=site,
                    base=base,
                    landmarks=landmarks,
                )
                return sign_heartbeat(heartbeat, self._signer)
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
        if base is None:
            self._full = _LastFull(entry.seq, entry.hash, digest, now)
        if self._landmarks is not None:
            # Spooled, so the stream will deliver them: no later evidence carries them again.
            self._landmarks.carried(landmarks)
        return entry
