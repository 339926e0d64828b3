"""The checkpointer signs trees that are exactly the store's log: fed by its own commits, and
caught up from the store across another replica's entries."""

from __future__ import annotations

import asyncio

from attest import merkle
from attest.checkpoint import NoteKey, verify_checkpoint
from attest.errors import StoreError
from attest.keys import SoftwareSigner
from tests.verifier.store.conftest import Backend
from tests.verifier.store.helpers import T0, Chain, enroll, gpus
from verifier.model import Accepted
from verifier.store.api import Store
from verifier.store.batch import GroupCommitter
from verifier.transparency import Checkpointer, Inclusion, leaf_hashes

ORIGIN = "test.example/log"


def _check_covers(store: Store, signer: SoftwareSigner, note: bytes, index: int) -> None:
    """`note` verifies, its tree holds `index`, and its root is the store's log of that size."""
    checkpoint = verify_checkpoint(note, NoteKey(ORIGIN, signer.public_key), ORIGIN)
    assert checkpoint.size > index
    assert checkpoint.root == merkle.root(list(leaf_hashes(store, 0, checkpoint.size)))


async def _commit_round(committer: GroupCommitter, chains: list[Chain]) -> list[Accepted]:
    return list(await asyncio.gather(*(committer.submit(c.next(T0)) for c in chains)))


async def test_own_commits_need_no_log_read(backend: Backend) -> None:
    store = backend.open()
    signer = SoftwareSigner.generate("ed25519")
    checkpointer = Checkpointer(store, signer, ORIGIN)
    chains = [Chain(f"a{i:02}", inventory=gpus(f"GPU-{i}")) for i in range(12)]
    for chain in chains:
        enroll(store, chain.agent_id)
    committer = GroupCommitter(store, max_batch=5, on_commit=checkpointer.observe)
    await committer.start()
    accepted = [a for _ in range(3) for a in await _commit_round(committer, chains)]
    await committer.close()
    # Everything committed was observed: with the store closed, every receipt still gets its
    # checkpoint, so none of them read the log back.
    store.close()
    notes = {a.log_index: await checkpointer.covering(a.log_index) for a in accepted}
    reader = backend.open()
    for index, note in notes.items():
        _check_covers(reader, signer, note, index)
    assert max(notes) == 35


async def test_another_replicas_entries_are_read_from_the_store(backend: Backend) -> None:
    mine, theirs = backend.open(), backend.open()
    signer = SoftwareSigner.generate("ed25519")
    checkpointer = Checkpointer(mine, signer, ORIGIN)
    own = [Chain(f"m{i}") for i in range(4)]
    other = [Chain(f"o{i}") for i in range(3)]
    for chain in own + other:
        enroll(mine, chain.agent_id)
    committer = GroupCommitter(mine, on_commit=checkpointer.observe)
    their_committer = GroupCommitter(theirs)  # another replica: this checkpointer never hears
    await committer.start()
    await their_committer.start()
    for _ in range(3):
        await _commit_round(their_committer, other)
        for accepted in await _commit_round(committer, own):
            _check_covers(mine, signer, await checkpointer.covering(accepted.log_index),
                          accepted.log_index)  # fmt: skip
    await committer.close()
    await their_committer.close()
    assert await asyncio.to_thread(mine.log_size) == 21


async def test_an_entry_not_in_the_log_is_refused(store: Store) -> None:
    checkpointer = Checkpointer(store, SoftwareSigner.generate("ed25519"), ORIGIN)
    try:
        await checkpointer.covering(0)
    except StoreError as exc:
        assert "entry 0" in str(exc)
    else:
        raise AssertionError("a checkpoint for an entry the log does not hold")


def _check_proof(store: Store, signer: SoftwareSigner, inclusion: Inclusion, index: int) -> None:
    """The inclusion proof leads from the stored leaf at `index` to the signed root."""
    checkpoint = verify_checkpoint(inclusion.checkpoint, NoteKey(ORIGIN, signer.public_key))
    assert checkpoint.size == inclusion.size > index
    leaf = next(leaf_hashes(store, index, index + 1))
    merkle.verify_inclusion(leaf, index, checkpoint.size, inclusion.proof, checkpoint.root)


async def test_inclusion_proofs_of_own_commits_come_from_memory(backend: Backend) -> None:
    store = backend.open()
    signer = SoftwareSigner.generate("ed25519")
    checkpointer = Checkpointer(store, signer, ORIGIN)
    chains = [Chain(f"a{i:02}", inventory=gpus(f"GPU-{i}")) for i in range(7)]
    for chain in chains:
        enroll(store, chain.agent_id)
    committer = GroupCommitter(store, max_batch=3, on_commit=checkpointer.observe)
    await committer.start()
    accepted = [a for _ in range(3) for a in await _commit_round(committer, chains)]
    await committer.close()
    store.close()  # every proof must come from memory now
    proofs = {a.log_index: await checkpointer.prove(a.log_index) for a in accepted}
    reader = backend.open()
    for index, inclusion in proofs.items():
        _check_proof(reader, signer, inclusion, index)
    assert sorted(proofs) == list(range(21))


async def test_proofs_past_the_window_and_across_replicas_come_from_the_store(
    backend: Backend,
) -> None:
    mine, theirs = backend.open(), backend.open()
    signer = SoftwareSigner.generate("ed25519")
    checkpointer = Checkpointer(mine, signer, ORIGIN, window=3)
    own = [Chain(f"m{i}") for i in range(4)]
    other = [Chain(f"o{i}") for i in range(5)]
    for chain in own + other:
        enroll(mine, chain.agent_id)
    committer = GroupCommitter(mine, on_commit=checkpointer.observe)
    their_committer = GroupCommitter(theirs)
    await committer.start()
    await their_committer.start()
    answered: list[Accepted] = []
    for _ in range(3):
        await _commit_round(their_committer, other)
        for accepted in await _commit_round(committer, own):
            _check_proof(mine, signer, await checkpointer.prove(accepted.log_index),
                         accepted.log_index)  # fmt: skip
            answered.append(accepted)
    await committer.close()
    await their_committer.close()
    # Long after: the window has moved on, so these proofs are read from the store's leaves.
    for accepted in answered:
        _check_proof(mine, signer, await checkpointer.prove(accepted.log_index),
                     accepted.log_index)  # fmt: skip
