"""Finding an agent's attestation by seq (docs/design.md §9, migration 0014).

Attestations are keyed by log index, so a commit appends them; each row names its agent's
previous one (`prev_index`), and only every `STRIDE`-th seq of a chain is in the (agent, seq)
index. The row of (agent, seq) is therefore found from the indexed seq at or above it, or from
the agent's head when none is, by at most STRIDE - 1 steps back along prev_index: one index
lookup and up to 64 primary-key reads, for the rare readers (a replayed or forked seq, `ingest`
of a file, a fork finding), while every accept writes an index leaf only once in 64 envelopes.
"""

from __future__ import annotations

from attest.errors import StoreError
from attest.model import Freshness
from verifier.model import AttestationRecord
from verifier.store.sqlbase import Db, from_micros

#: Seqs that are multiples of this are indexed: the migration's partial index, `(seq & 63) = 0`.
STRIDE = 64

#: An attestation row's `fresh` column (migration 0017) for each verdict, and back.
FRESH = {Freshness.NONCE: 1, Freshness.OFFLINE: 0}
_FRESHNESS = {code: freshness for freshness, code in FRESH.items()}

_STORED_FIELDS = (
    "agent_no, seq, envelope_hash, payload_digest, fresh, created_at, received_at, log_index, "
    "prev_index"
)


def find_attestation(db: Db, agent_id: str, seq: int) -> AttestationRecord | None:
    """The attestation at (agent_id, seq) as committed, or None when the agent has none at
    that seq. Raises StoreError when the chain's links are broken (a row the head or a link
    names is missing or names another agent) or a row holds a verdict of neither kind."""
    if seq < 1:
        return None
    head = db.one(
        "SELECT last_seq, last_log_index, agent_no FROM agents WHERE agent_id = ?", (agent_id,)
    )
    if head is None or head[1] is None or seq > int(head[0]):
        return None
    agent_no = int(head[2])
    start = -(-seq // STRIDE) * STRIDE  # the indexed seq at or above `seq`
    if start <= int(head[0]):
        found = db.one(
            "SELECT log_index FROM attestations "
            # The partial index's own predicate, word for word, so both planners use it.
            "WHERE agent_no = ? AND seq = ? AND (seq & 63) = 0",
            (agent_no, start),
        )
        if found is None:
            raise StoreError(f"agent {agent_id!r} has no indexed attestation at seq {start}")
        index = found[0]
    else:
        index = head[1]
    for _ in range(STRIDE):
        row = db.one(f"SELECT {_STORED_FIELDS} FROM attestations WHERE log_index = ?", (index,))
        if row is None or int(row[0]) != agent_no:
            raise StoreError(f"agent {agent_id!r}'s chain names log index {index}, not its own")
        if int(row[1]) == seq:
            freshness = _FRESHNESS.get(int(row[4]))
            if freshness is None:
                raise StoreError(f"attestation at log index {index} has freshness {row[4]!r}")
            return AttestationRecord(
                agent_id=agent_id,
                seq=seq,
                envelope_hash=bytes(row[2]),
                payload_digest=bytes(row[3]),
                freshness=freshness,
                created_at=from_micros(row[5]),
                received_at=from_micros(row[6]),
                log_index=int(row[7]),
            )
        if int(row[1]) < seq or row[-1] is None:
            break
        index = row[-1]
    raise StoreError(f"agent {agent_id!r}'s chain does not lead back to seq {seq}")
