"""What reconciliation reads and what it returns (docs/design.md §14), as frozen values.

The store aggregates GPUs in SQL into `HoldingRow`s (one per site and PCI identity) and the
latest posture per agent into `PostureRow`s; `verifier.reconcile.reconcile` turns them, the
registry and a policy pack into findings and totals. Sizes are O(sites x models +
authorizations), never O(GPUs): a row carries a count, not GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from verifier.model import FindingDraft
from verifier.registry_model import Registry


@dataclass(frozen=True, slots=True)
class HoldingRow:
    """GPUs at one site of one PCI identity, as of the reconciliation date (aggregated in SQL)."""

    site_id: str
    pci_device_id: int | None  # NVML form: (device << 16) | 0x10DE; None = unreadable
    pci_subsystem_id: int | None
    count: int  # GPUs
    power_limit_w: int  # sum of the GPUs' enforced power limits, watts (0 if unknown)
    first_received: date  # earliest first-received date among them
    evidence: tuple[int, ...] = ()  # a few transparency-log indices behind the row


@dataclass(frozen=True, slots=True)
class HoldingDelta:
    """What one accepted attestation changed in the GPUs held at one site of one PCI identity
    (signed counts): written to the holdings journal in the accept transaction, applied by
    incremental reconciliation (`verifier.reconcile.live`)."""

    site_id: str
    pci_device_id: int | None
    pci_subsystem_id: int | None
    count: int  # GPUs gained (positive) or no longer held (negative)
    power_limit_w: int  # change in the summed enforced power limits, watts
    received: date  # receipt day of the attestation
    log_index: int  # the attestation's transparency-log index


@dataclass(frozen=True, slots=True)
class ComplianceChanges:
    """What changed the holdings and postures from one log position to another: `Store.
    compliance_changes`. `epoch` moves with changes made outside the log (a revocation, a
    registry import); rows below `floor` were pruned. Either, when it is not what the reader
    expects, means: start again from `Store.current_compliance`."""

    epoch: int
    floor: int
    position: int  # the log size these changes bring the reader to
    deltas: tuple[HoldingDelta, ...] = ()
    postures: tuple[PostureRow, ...] = ()


@dataclass(frozen=True, slots=True)
class CurrentCompliance:
    """Today's holdings and postures read in one snapshot, with the log position and epoch
    they stand at (`Store.current_compliance`); `postures` is read page by page."""

    epoch: int
    position: int
    registry: Registry  # the registry in force now
    holdings: list[HoldingRow]
    postures: Iterator[PostureRow]


@dataclass(frozen=True, slots=True)
class PostureRow:
    """One agent's latest attested posture, for the safeguard rules."""

    site_id: str
    agent_id: str
    checks: Mapping[str, str]  # check name -> "pass" | "fail" | "unknown" (attest.model)
    evidence: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    """GPUs and their TPP; `controlled_*` counts only 3A090 GPUs (and unknown models, which
    count as controlled at the catalogue's highest TPP): the rules judge those."""

    units: int = 0
    tpp: int = 0
    controlled_units: int = 0
    controlled_tpp: int = 0


@dataclass(frozen=True, slots=True)
class CountryTotals:
    """A destination's holdings and its tier on the date (None: a site not in the registry)."""

    country: str
    tier: int | None
    totals: Totals


@dataclass(frozen=True, slots=True)
class AuthorizationUsage:
    """What an authorization carries on the date: the controlled GPUs attributed to it (see
    docs/design.md §14) against its limits (None: no limit)."""

    id: str
    holder: str
    kind: str
    state: str  # "valid", "expired" or "not-yet-valid" on the date
    used_units: int
    used_tpp: int
    max_units: int | None
    max_tpp: int | None  # the registry's figure, rounded down: holdings are whole TPP


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Findings and totals of one reconciliation; mappings are keyed and ordered by id (GPUs
    at a site not in the registry count under country and entity "?")."""

    on: date
    pack_id: str
    findings: tuple[FindingDraft, ...]
    total: Totals
    by_site: Mapping[str, Totals]
    by_country: Mapping[str, CountryTotals]
    by_entity: Mapping[str, Totals]
    by_model: Mapping[str, Totals]
    authorizations: tuple[AuthorizationUsage, ...]
