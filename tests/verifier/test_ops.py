"""Operations: plaintext mode on loopback, Prometheus metrics, sd_notify, findings sweep."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from attest.keys import SoftwareSigner
from attest.sdnotify import Notifier
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc
from tests.verifier.conftest import make_config
from tests.verifier.helpers import Chain
from tests.verifier.rpc import Enrolled, Stream, check_receipt, csr_for, enroll_agent, new_token
from tests.verifier.sim import free_port
from verifier.config import FleetConfig
from verifier.server import start
from verifier.servicer import PLAINTEXT_AGENT_HEADER


async def test_insecure_plaintext_on_loopback_uses_the_signature_binding(tmp_path: Path) -> None:
    port = free_port()
    config = replace(
        make_config(tmp_path), listen=f"127.0.0.1:{port}", metrics_listen=f"127.0.0.1:{free_port()}"
    )
    running = await start(config, insecure_plaintext=True)
    try:
        store = running.core.store
        signer = SoftwareSigner.generate()  # no TLS here, so Ed25519 agent keys work
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AttestationStub(channel)
            reply = await stub.Enroll(
                pb.EnrollRequest(
                    token=new_token(store), public_key=signer.public_key.spki_der,
                    csr=csr_for(signer), hostname="h", machine_id="m",
                ),
                timeout=10,
            )  # fmt: skip
            agent = Enrolled(
                reply.agent_id, signer, b"", b"", running.core.receipt_signer.public_key
            )
            chain = Chain(agent.agent_id, signer)
            stream = Stream(channel, ((PLAINTEXT_AGENT_HEADER, agent.agent_id),))
            challenge = await stream.challenge()
            raw = chain.next(challenge.nonce, datetime.now(UTC))
            await stream.send(raw)
            message = await stream.recv()
            check_receipt(agent, message.receipt, raw)
            await stream.call.done_writing()
            # A stream that lies about who it is gains nothing: the pinned key decides.
            liar = Stream(channel, ((PLAINTEXT_AGENT_HEADER, agent.agent_id),))
            challenge = await liar.challenge()
            forged = Chain(agent.agent_id, SoftwareSigner.generate(), 1, chain.prev)
            await liar.send(forged.next(challenge.nonce, datetime.now(UTC)))
            assert (await liar.recv()).rejection.code == "signature-unknown-key"
            assert await liar.status() == grpc.StatusCode.PERMISSION_DENIED
            # And without the header there is no identity at all.
            nobody = Stream(channel)
            assert await nobody.status() == grpc.StatusCode.UNAUTHENTICATED
        host, metrics_port = config.metrics_listen.split(":")
        url = f"http://{host}:{metrics_port}/metrics"
        body = await asyncio.to_thread(_fetch, url)
        assert 'gpu_attest_verifier_envelopes_accepted_total{freshness="nonce"} 1.0' in body
        assert 'gpu_attest_verifier_envelopes_rejected_total{code="signature-unknown-key"}' in body
        assert "gpu_attest_verifier_streams_active" in body
        assert "gpu_attest_verifier_store_transactions_total 1.0" in body
    finally:
        await running.stop(0)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_sd_notify_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.ready("serving")
        notifier.watchdog()
        notifier.stopping()
        got = [sock.recv(256) for _ in range(3)]
    assert got == [b"READY=1\nSTATUS=serving", b"WATCHDOG=1", b"STOPPING=1"]
    assert not Notifier({}).ready()  # not under systemd: nothing happens


async def test_sweep_runs_periodically(tmp_path: Path) -> None:
    config = replace(
        make_config(tmp_path), fleet=FleetConfig(agent_deadline_s=1, sweep_interval_s=1)
    )
    running = await start(config)
    try:
        store = running.core.store
        await enroll_agent(running, new_token(store))
        for _ in range(100):
            if any(f.rule == "agent-stale" for f in store.iter_findings()):
                break
            await asyncio.sleep(0.1)
        assert any(f.rule == "agent-stale" for f in store.iter_findings())
    finally:
        await running.stop(0)
