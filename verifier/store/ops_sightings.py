"""Fleet-state writes of the accept transaction, taken only when an agent's inventory
fingerprint changed: per-(GPU, agent) sightings, and `duplicate-gpu` findings for GPUs that
another agent still freshly claims (raised here so they appear within one attestation)."""

from __future__ import annotations

from attest.identifiers import PLACEHOLDER_UUID
from verifier import findings
from verifier.model import AgentStatus, VerifiedAttestation
from verifier.store.api import StoreOptions
from verifier.store.ops_findings import upsert_findings
from verifier.store.sqlbase import Db, from_micros, opt_from_micros, to_micros

_IN_CHUNK = 500


def update_sightings(
    db: Db,
    *,
    item: VerifiedAttestation,
    site_id: str,
    log_index: int,
    seen_us: int,
    previous: tuple[int | None, int | None],
) -> list[Released]:
    """Upsert a present sighting for every reported GPU; mark the ones that left absent.
    Returns the lost GPUs of other agents that this report released (`release_lost_elsewhere`).

    A GPU fallen off the bus usually comes back as a placeholder (`unknown-gpu-index-N`, state
    LOST): it names no identity, so it is not stored; the GPUs that left the inventory in that
    same attestation are the ones that fell off, and are marked lost instead of gone. A GPU
    whose UUID was still readable comes with its own UUID and the lost flag."""
    fell_off = fell_out_of_sight(item)
    claims = [g for g in item.gpus if not (g.lost and PLACEHOLDER_UUID.match(g.uuid))]
    present = {
        r[0]
        for r in db.all(
            "SELECT uuid FROM gpu_sightings WHERE agent_id = ? AND present = 1", (item.agent_id,)
        )
    }
    db.many(
        "INSERT INTO gpu_sightings (uuid, agent_id, site_id, name, pci_device_id, first_seen, "
        "last_seen, present, last_log_index, serial, board_part_number, lost) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) "
        "ON CONFLICT (uuid, agent_id) DO UPDATE SET site_id = excluded.site_id, "
        "name = excluded.name, pci_device_id = excluded.pci_device_id, "
        "last_seen = excluded.last_seen, present = 1, last_log_index = excluded.last_log_index, "
        "serial = excluded.serial, board_part_number = excluded.board_part_number, "
        "lost = excluded.lost",
        [
            (g.uuid, item.agent_id, site_id, g.name, g.pci_device_id, seen_us, seen_us,
             log_index, g.serial, g.board_part_number, int(g.lost))
            for g in claims
        ],
    )  # fmt: skip
    reported = {g.uuid for g in claims}
    prev_seen, prev_index = previous
    # A GPU that left the inventory was last seen by the previous attestation; one that fell
    # off the bus keeps as its evidence this attestation, the one that reported the loss.
    gone_index = log_index if fell_off else prev_index or 0
    # A GPU already reported lost under its own UUID stays lost when it drops out of the
    # inventory (a driver reload stops listing it): still held until reported again, as the
    # presence intervals (ops_holdings.update_presence) count it.
    db.many(
        "UPDATE gpu_sightings SET present = 0, lost = CASE WHEN lost = 1 THEN 1 ELSE ? END, "
        "last_seen = ?, last_log_index = ? WHERE uuid = ? AND agent_id = ?",
        [
            (int(fell_off), prev_seen if prev_seen is not None else seen_us, gone_index,
             uuid, item.agent_id)
            for uuid in sorted(present - reported)
        ],
    )  # fmt: skip
    return release_lost_elsewhere(db, item=item, reported=sorted(reported))


def fell_out_of_sight(item: VerifiedAttestation) -> bool:
    """Whether the GPUs that left the inventory in this attestation are lost rather than gone:
    a LOST placeholder (a GPU fallen off the bus, UUID unreadable) says they fell off the bus,
    and an inventory the agent could not read cleanly (no driver, an NVML error) says nothing
    about them at all. Either way they stay held: unloading the driver must not take a host's
    GPUs out of the holdings."""
    if not item.inventory_read:
        return True
    return any(g.lost and PLACEHOLDER_UUID.match(g.uuid) for g in item.gpus)


#: A released GPU: the agent that held it as lost, its site, PCI ids and enforced power limit.
Released = tuple[str, str, int | None, int | None, int]


def release_lost_elsewhere(
    db: Db, *, item: VerifiedAttestation, reported: list[str]
) -> list[Released]:
    """A lost GPU stays held by the agent that lost it until it is reported again, by any agent:
    a repaired board installed in another host is that host's now. Otherwise it would count at
    both sites (no `duplicate-gpu`, which looks at present claims only) until the first agent
    is revoked. The sweep resolves `gpu-lost` once no agent holds the GPU as lost."""
    received_us = to_micros(item.received_at)
    out: list[Released] = []
    for start in range(0, len(reported), _IN_CHUNK):
        chunk = reported[start : start + _IN_CHUNK]
        released = db.all(
            "SELECT uuid, agent_id, site_id, pci_device_id, pci_subsystem_id, power_limit_w "
            "FROM gpu_sightings WHERE present = 0 AND lost = 1 "
            f"AND agent_id <> ? AND uuid IN {db.in_list(len(chunk))}",
            (item.agent_id, *chunk),
        )
        db.many(
            "UPDATE gpu_presence SET to_us = ? WHERE uuid = ? AND agent_id = ? AND to_us IS NULL",
            [(received_us, r[0], r[1]) for r in released],
        )
        db.many(
            "UPDATE gpu_sightings SET lost = 0 WHERE uuid = ? AND agent_id = ?",
            [(r[0], r[1]) for r in released],
        )
        out += [
            (str(agent), str(site), _opt(device), _opt(subsystem), int(power or 0))
            for _, agent, site, device, subsystem, power in released
        ]
    return out


def _opt(value: object) -> int | None:
    return None if value is None else int(str(value))


def raise_duplicates(
    db: Db,
    *,
    item: VerifiedAttestation,
    log_index: int,
    seen_us: int,
    now_us: int,
    options: StoreOptions,
) -> None:
    """Raise `duplicate-gpu` for reported GPUs that another active agent claims freshly."""
    uuids = sorted({g.uuid for g in item.gpus})
    claims = [
        findings.GpuClaimState(u, item.agent_id, True, from_micros(seen_us), log_index)
        for u in uuids
    ]
    others = 0
    for start in range(0, len(uuids), _IN_CHUNK):
        chunk = uuids[start : start + _IN_CHUNK]
        rows = db.all(
            "SELECT s.uuid, s.agent_id, a.status, a.last_seen_at, a.last_log_index "
            "FROM gpu_sightings s JOIN agents a ON a.agent_id = s.agent_id "
            f"WHERE s.present = 1 AND s.agent_id <> ? AND s.uuid IN {db.in_list(len(chunk))}",
            (item.agent_id, *chunk),
        )
        others += len(rows)
        claims.extend(
            findings.GpuClaimState(
                uuid, agent_id, status == AgentStatus.ACTIVE.value, opt_from_micros(seen), idx
            )
            for uuid, agent_id, status, seen, idx in rows
        )
    if others:
        now = from_micros(now_us)
        drafts = findings.duplicate_gpu(claims, now, options.attestation_deadline)
        upsert_findings(db, drafts, now_us)
