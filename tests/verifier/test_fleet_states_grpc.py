"""A GPU that fell off the bus, as the agent reports it (a LOST placeholder entry), through a
real server: the fleet shows it `lost` with its model class, serial and board part number, and
the sweep raises gpu-lost."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from attest import model
from tests.verifier.helpers import Chain, gpu
from tests.verifier.rpc import Stream, check_receipt, enroll_agent, mtls_channel, new_token
from verifier.findings_cli import fleet_catalogue
from verifier.server import Running
from verifier.views import host_view

UUIDS = ("GPU-00000000-0000-0000-0000-000000000001", "GPU-00000000-0000-0000-0000-000000000002")


def _fell_off(index: int) -> model.Gpu:
    """What the agent sends for a GPU whose handle reads GpuIsLost (`absent_gpu` in
    agent/readings.py)."""
    gone = model.Unavailable("GpuIsLost")
    fields: dict[str, object] = dict.fromkeys(vars(gpu(UUIDS[0])), gone)
    fields.update(index=index, state=model.GpuState.LOST, uuid=f"unknown-gpu-index-{index}")
    return model.Gpu(**fields)  # type: ignore[arg-type]


async def test_a_lost_gpu_reported_through_the_server(running: Running) -> None:
    store = running.core.store
    agent = await enroll_agent(running, new_token(store))
    chain = Chain(agent.agent_id, agent.signer, uuids=UUIDS)
    healthy = tuple(
        replace(gpu(u, i), board_part_number="699-2G530-0200-000") for i, u in enumerate(UUIDS)
    )
    async with mtls_channel(running, agent) as channel:
        stream = Stream(channel)
        nonce = (await stream.challenge()).nonce
        for gpus in (healthy, (healthy[0], _fell_off(1))):
            raw = chain.next(nonce, datetime.now(UTC), gpus=gpus)
            await stream.send(raw)
            message = await stream.recv()
            assert message.WhichOneof("kind") == "receipt", message
            check_receipt(agent, message.receipt, raw)
            nonce = message.next_challenge.nonce
        await stream.call.done_writing()
    [host] = list(store.iter_fleet())
    view = host_view(host, fleet_catalogue(datetime.now(UTC).date()))
    states = {
        g["uuid"]: (g["state"], g["model"], g["serial"], g["board_part_number"])
        for g in view["gpus"]
    }
    assert states == {
        UUIDS[0]: ("present", "H100-SXM", "1650000000000", "699-2G530-0200-000"),
        UUIDS[1]: ("lost", "H100-SXM", "1650000000001", "699-2G530-0200-000"),
    }
    store.sweep(datetime.now(UTC) + timedelta(hours=2), timedelta(minutes=30))
    rules = {(f.rule, f.subject) for f in store.iter_findings()}
    assert ("gpu-lost", f"gpu:{UUIDS[1]}") in rules
    assert ("gpu-missing", f"gpu:{UUIDS[1]}") not in rules
