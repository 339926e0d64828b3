"""Receipts end to end over real gRPC: the agent drops a spooled envelope only for a receipt
whose checkpoint and inclusion proof verify; `receipts --json` lists what it keeps, and
`gpu-attest-report proof verify` checks a kept receipt with only the envelope's bytes."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from agent.config import load_config
from agent.exits import AgentExit
from agent.spool import SPOOL_FILE
from attest import report_cli
from attest.exits import ReportExit
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.agent.live import Agent, enrolled_agent, run_until
from verifier.config import VerifierConfig
from verifier.server import Running
from verifier.servicer import AttestationServicer


class _BadProofContext:
    """The real servicer's stream context, whose receipts leave with a broken inclusion proof."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.tampered = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def write(self, message: pb.VerifierMessage) -> None:
        if message.WhichOneof("kind") == "receipt":
            body = pb.ReceiptBody.FromString(message.receipt)
            if body.inclusion_proof:
                body.inclusion_proof[0] = bytes(32)
            else:  # a one-entry tree: any proof at all is wrong
                body.inclusion_proof.append(bytes(32))
            tampered = pb.VerifierMessage()
            tampered.CopyFrom(message)
            tampered.receipt = body.SerializeToString(deterministic=True)
            message = tampered
            self.tampered += 1
        await self._context.write(message)


class _BadProofServicer(AttestationServicer):
    contexts: list[_BadProofContext]

    async def Attest(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]  # noqa: N802
        wrapped = _BadProofContext(context)
        self.contexts.append(wrapped)
        await super().Attest(request_iterator, cast(Any, wrapped))


@pytest.fixture
async def bad_proofs(
    running: Running, config: VerifierConfig
) -> AsyncIterator[tuple[int, _BadProofServicer]]:
    """A second mTLS Attest endpoint on the same verifier core whose receipts carry bad proofs."""
    servicer = _BadProofServicer(running.core)
    servicer.contexts = []
    server = grpc.aio.server()
    pb_grpc.add_AttestationServicer_to_server(servicer, server)
    state = config.state_dir
    credentials = grpc.ssl_server_credentials(
        [((state / "server.key").read_bytes(), (state / "server.pem").read_bytes())],
        root_certificates=running.core.ca.pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(0)


def _pointed_at(agent: Agent, port: int) -> Agent:
    text = agent.config.read_text().split("verifier = ")[0]
    agent.config.write_text(text + f'verifier = "127.0.0.1:{port}"\n')
    return dataclasses.replace(agent, cfg=load_config(agent.config))


def _spooled(agent: Agent) -> list[int]:
    with sqlite3.connect(agent.state_dir / SPOOL_FILE) as db:
        return [int(row[0]) for row in db.execute("SELECT seq FROM entries ORDER BY seq")]


def _kept(agent: Agent) -> list[int]:
    with sqlite3.connect(agent.state_dir / SPOOL_FILE) as db:
        return [int(row[0]) for row in db.execute("SELECT seq FROM receipts ORDER BY seq")]


def _receipts_json(agent: Agent, capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    capsys.readouterr()
    assert agent.cli("receipts", "--json", *extra) == AgentExit.OK
    return json.loads(capsys.readouterr().out)


async def test_a_receipt_with_a_bad_proof_is_refused_and_the_envelope_stays_spooled(
    tmp_path: Path,
    running: Running,
    bad_proofs: tuple[int, _BadProofServicer],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, servicer = bad_proofs
    agent = _pointed_at(await enrolled_agent(tmp_path, running), port)
    caplog.set_level(logging.ERROR, logger="gpu_attest.agent")

    def refused() -> bool:
        return any(c.tampered for c in servicer.contexts) and "rejecting a receipt" in caplog.text

    await run_until(agent, refused)
    # The verifier holds seq 1, but its receipt did not prove it: the agent keeps it spooled.
    assert agent.record().last_seq == 1
    assert _spooled(agent) == [1]
    assert _kept(agent) == []
    assert "proof-invalid" in caplog.text
    assert _receipts_json(agent, capsys) == {"receipts": []}

    # The real endpoint: its challenge says the verifier holds seq 1 (dropped), and the next
    # envelope's receipt verifies and is kept.
    agent = _pointed_at(agent, running.ports["listen"])
    await run_until(agent, lambda: _kept(agent) != [])
    assert _spooled(agent) == []
    out = tmp_path / "receipts"
    listed = _receipts_json(agent, capsys, "--out", str(out))["receipts"]
    assert [r["seq"] for r in listed] == [2]
    [row] = listed
    accepted = running.core.store.get_attestation(agent.identity.agent_id, 2)
    assert accepted is not None
    assert row["envelope_hash"] == accepted.envelope_hash.hex()
    assert row["log_index"] == accepted.log_index < row["checkpoint_size"]
    assert row["accepted_at"] and row["received_at"]
    assert agent.cli("receipts") == AgentExit.OK
    table = capsys.readouterr().out
    assert row["envelope_hash"] in table and "1 receipt(s) kept" in table

    # The kept receipt checks offline with the envelope's bytes and the verifier's key.
    envelope = running.core.store.get_envelope(accepted.log_index)
    assert envelope is not None
    (tmp_path / "2.envelope").write_bytes(envelope)
    args = [
        "proof", "verify", str(out / "2.receipt"), "--entry", str(tmp_path / "2.envelope"),
        "--key", str(agent.state_dir / "verifier.pub"), "--json",
    ]  # fmt: skip
    capsys.readouterr()
    assert report_cli.main(args) == ReportExit.VALID
    verified = json.loads(capsys.readouterr().out)
    assert verified["index"] == accepted.log_index
    assert verified["receipt"]["seq"] == 2
    assert verified["checkpoint"]["size"] == row["checkpoint_size"]
    # Another envelope's bytes with the same receipt: refused.
    (tmp_path / "other.envelope").write_bytes(envelope + b"\x00")
    args[4] = str(tmp_path / "other.envelope")
    assert report_cli.main(args) == ReportExit.INVALID
