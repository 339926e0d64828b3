"""The CLI's output forms: JSON-ready views of agents, hosts and findings, and a JSON array
written item by item (a listing of any size in bounded memory).

`--json` output is a stable contract: keys are only ever added, never renamed or removed.

The text lines of the listings are made here too, and every string in them that an agent,
an enrollment request or the registry chose goes through `attest.text.escape`: a name holding a
newline, an ESC sequence or a bidi override prints as inert escapes on one line, never as a
forged line or a terminal command. JSON needs no such step: `json.dumps` writes every non-ASCII
and control character as a `\\uXXXX` escape (ensure_ascii, its default).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

from attest.text import escape
from verifier.model import AgentRecord, AgentStatus, Finding, GpuSighting, HostFleet
from verifier.policy import Catalogue, CatalogueEntry, classify


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=True) + "\n")


def write_json_array(items: Iterable[Any]) -> None:
    """Write what `print_json(list(items))` writes, byte for byte, one item at a time, so a
    listing of any length is printed holding one item (JSON strings carry no raw newline)."""
    out = sys.stdout
    opened = False
    for item in items:
        out.write(",\n  " if opened else "[\n  ")
        out.write(json.dumps(jsonable(item), indent=2, sort_keys=True).replace("\n", "\n  "))
        opened = True
    out.write("\n]\n" if opened else "[]\n")


# --- views (the --json contract) ----------------------------------------------------------------


def agent_view(agent: AgentRecord) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "site_id": agent.site_id,
        "hostname": agent.hostname,
        "machine_id": agent.machine_id,
        "status": agent.status.value,
        "enrolled_at": jsonable(agent.enrolled_at),
        "last_seq": agent.last_seq,
        "last_seen_at": jsonable(agent.last_seen_at),
        "last_fresh_at": jsonable(agent.last_fresh_at),
        "next_due": jsonable(agent.next_due),
        "revoked_at": jsonable(agent.revoked_at),
        "keyids": [k.keyid for k in agent.current_keys],
    }


def gpu_state(agent: AgentRecord, gpu: GpuSighting) -> str:
    """A GPU's fleet state: `revoked` (its agent was revoked: out of the holdings), `lost`
    (fallen off the bus: still held and counted), `present`, or `missing` (left the inventory)."""
    if agent.status is AgentStatus.REVOKED:
        return "revoked"
    if gpu.lost:
        return "lost"
    return "present" if gpu.present else "missing"


def model_class(gpu: GpuSighting, catalogue: Catalogue | None) -> str:
    """The catalogue model of a GPU from its attested PCI ids (never its name string)."""
    if catalogue is None:
        return "unknown"
    entry = classify(gpu.pci_device_id, gpu.pci_subsystem_id, catalogue)
    return entry.model if isinstance(entry, CatalogueEntry) else "unknown"


def host_view(host: HostFleet, catalogue: Catalogue | None = None) -> dict[str, Any]:
    agent = host.agent
    return {
        "agent_id": agent.agent_id,
        "hostname": agent.hostname,
        "site_id": agent.site_id,
        "status": agent.status.value,
        "last_seen_at": jsonable(agent.last_seen_at),
        "gpus": [
            {
                "uuid": g.uuid,
                "name": g.name,
                "pci_device_id": g.pci_device_id,
                "first_seen": jsonable(g.first_seen),
                "last_seen": jsonable(g.last_seen),
                "present": g.present,
                "state": gpu_state(agent, g),
                "model": model_class(g, catalogue),
                "serial": g.serial,
                "board_part_number": g.board_part_number,
            }
            for g in host.gpus
        ],
    }


def finding_view(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "state": finding.status.value,
        "rule": finding.rule,
        "severity": finding.severity.value,
        "subject": finding.subject,
        "message": finding.message,
        "evidence": list(finding.evidence),
        "status": finding.status.value,
        "opened_at": jsonable(finding.opened_at),
        "updated_at": jsonable(finding.updated_at),
        "resolved_at": jsonable(finding.resolved_at),
        "acknowledged_at": jsonable(finding.acknowledged_at),
        "acknowledged_by": finding.acknowledged_by,
        "ack_reason": finding.ack_reason,
        "cleared_by": finding.cleared_by,  # log index of the evidence that cleared it
        "resolved_reason": finding.resolved_reason,
    }


# --- commands -----------------------------------------------------------------------------------


# --- text lines (every untrusted string escaped) ------------------------------------------------


def agent_line(agent: AgentRecord) -> str:
    seen = agent.last_seen_at.isoformat(timespec="seconds") if agent.last_seen_at else "never"
    return (
        f"{escape(agent.agent_id)}  {agent.status.value:8}  site={escape(agent.site_id)}  "
        f"host={escape(agent.hostname)}  seq={agent.last_seq}  last_seen={seen}"
    )


def _gpu_counts(host: HostFleet) -> str:
    present = sum(g.present for g in host.gpus)
    others = len(host.gpus) - present
    return f"{present}" + (f" (+{others} not present, listed below)" if others else "")


def host_lines(host: HostFleet) -> Iterator[str]:
    """A host's line, then one indented line per GPU."""
    a = host.agent
    yield (
        f"{escape(a.hostname or a.agent_id)}  site={escape(a.site_id)}  "
        f"agent={escape(a.agent_id)}  gpus={_gpu_counts(host)}"
    )
    for g in host.gpus:
        state = gpu_state(a, g)
        name = escape(g.name) if g.name else "?"
        yield f"  {escape(g.uuid)}  {name}  {state}  last_seen={g.last_seen.isoformat()}"


def finding_line(finding: Finding) -> str:
    line = (
        f"id={finding.id} [{finding.severity.value}] {escape(finding.rule)}  "
        f"{escape(finding.subject)}  {finding.status.value}: {escape(finding.message)}"
    )
    if finding.acknowledged_at is not None:
        line += (
            f"  (acknowledged by {escape(finding.acknowledged_by or '')} at "
            f"{finding.acknowledged_at.isoformat(timespec='seconds')}: "
            f"{escape(finding.ack_reason or '')})"
        )
    if finding.resolved_at is not None:
        cleared = "" if finding.cleared_by is None else f", log index {finding.cleared_by}"
        line += f"  (resolved: {escape(finding.resolved_reason or '')}{cleared})"
    return line
