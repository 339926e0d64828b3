"""A verifier-like process for the durability test: it accepts chains for the given agents
through the GroupCommitter and prints `ACK agent seq log_index` only after each future resolved
(the moment a receipt would be sent). The test SIGKILLs it mid-stream."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from tests.verifier.store.helpers import T0, Chain, gpus
from verifier.model import Accepted
from verifier.store import open_store
from verifier.store.batch import GroupCommitter


async def _agent(committer: GroupCommitter, agent_id: str) -> None:
    chain = Chain(agent_id, inventory=gpus(f"GPU-{agent_id}"))
    for step in range(100_000):
        done = await committer.submit(chain.next(T0 + timedelta(seconds=step)))
        assert isinstance(done, Accepted)
        sys.stdout.write(f"ACK {agent_id} {done.seq} {done.log_index}\n")
        sys.stdout.flush()


async def main(url: str, agents: list[str]) -> None:
    store = open_store(url)
    committer = GroupCommitter(store)
    await committer.start()
    await asyncio.gather(*(_agent(committer, a) for a in agents))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
