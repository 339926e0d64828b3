"""Heartbeats between a running agent and a running verifier (loopback, mTLS, SQLite):
unchanged evidence goes as small heartbeats naming the last full evidence, and when the verifier
does not hold that one (a restored store) the agent sends its full evidence again
(docs/protocol.md §4.1)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from agent.config import load_config
from attest.envelope import EVIDENCE_PAYLOAD_TYPE, HEARTBEAT_PAYLOAD_TYPE
from attest.model import Freshness
from attest.wire import decode_envelope, decode_heartbeat
from tests.agent.live import Agent, enrolled_agent, run_until
from verifier.server import Running


async def fast_agent(tmp_path: Path, running: Running) -> Agent:
    agent = await enrolled_agent(tmp_path, running)
    text = agent.config.read_text().replace("interval_seconds = 3600", "interval_seconds = 1")
    agent.config.write_text(text + 'full_evidence_interval = "1h"\n')
    return dataclasses.replace(agent, cfg=load_config(agent.config))


def accepted(agent: Agent, seq: int) -> tuple[bytes, bytes]:
    """(envelope hash, envelope bytes) of what the verifier accepted at `seq`."""
    store = agent.running.core.store
    record = store.get_attestation(agent.identity.agent_id, seq)
    assert record is not None
    raw = store.get_envelope(record.log_index)
    assert raw is not None
    assert record.freshness is Freshness.NONCE, seq
    return record.envelope_hash, raw


def base_of(raw: bytes) -> bytes:
    envelope = decode_envelope(raw)
    assert envelope.payload_type == HEARTBEAT_PAYLOAD_TYPE
    return decode_heartbeat(envelope.payload).base


async def test_unchanged_evidence_goes_as_heartbeats_naming_the_full_one(
    tmp_path: Path, running: Running
) -> None:
    agent = await fast_agent(tmp_path, running)
    await run_until(agent, lambda: agent.record().last_seq >= 4)
    full_hash, full = accepted(agent, 1)
    assert decode_envelope(full).payload_type == EVIDENCE_PAYLOAD_TYPE
    holdings = list(running.core.store.holdings())
    assert [h.count for h in holdings] == [8] and holdings[0].evidence == (0,)
    for seq in (2, 3, 4):
        _, raw = accepted(agent, seq)
        assert base_of(raw) == full_hash, seq
        assert len(raw) < 400 < len(full), (seq, len(raw))


async def test_a_refused_heartbeat_is_replaced_by_full_evidence(
    tmp_path: Path, running: Running
) -> None:
    agent = await fast_agent(tmp_path, running)
    database = Path(running.core.config.database_url)
    moved: list[int] = []

    def forget_the_base() -> bool:
        """Once a heartbeat was accepted, make the verifier forget the full evidence (as a
        store restored from a backup taken before it would); then wait for the recovery."""
        seq = agent.record().last_seq
        if not moved and seq >= 2:
            with sqlite3.connect(database) as db:
                db.execute("UPDATE agents SET full_hash = zeroblob(32)")
            moved.append(agent.record().last_seq)
        return bool(moved) and seq >= moved[0] + 2

    await run_until(agent, forget_the_base)
    refused_at = moved[0] + 1
    full_hash, full = accepted(agent, refused_at)
    assert decode_envelope(full).payload_type == EVIDENCE_PAYLOAD_TYPE
    _, raw = accepted(agent, refused_at + 1)
    assert base_of(raw) == full_hash
    audit = [
        a
        for a in running.core.store.list_audit(1000)
        if a.code == "heartbeat-base-unknown" and a.seq == refused_at
    ]
    assert audit, "the refusal was audited"
