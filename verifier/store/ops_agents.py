"""Transaction bodies for tokens, enrollment, agents, keys, nonces and audit records.

Each function runs inside a transaction the backend opened; none commits.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from datetime import timedelta

from attest.errors import (
    AgentRevokedError,
    AgentUnknownError,
    StoreError,
    TokenExpiredError,
    TokenInvalidError,
    TokenUsedError,
)
from verifier import findings
from verifier.model import (
    NONCE_TIME_BYTES,
    AgentRecord,
    AgentStatus,
    AuditKind,
    AuditRecord,
    Enrollment,
    EnrollmentRequest,
    NewToken,
    NonceRecord,
    TokenRecord,
)
from verifier.store import ops_compliance
from verifier.store.api import StoreOptions
from verifier.store.ops_findings import resolve_findings
from verifier.store.sqlbase import (
    Db,
    from_micros,
    opt_from_micros,
    read_agents,
    to_micros,
)

_NO_INVENTORY = b""
_MICRO = timedelta(microseconds=1)


def create_token(db: Db, token: NewToken) -> None:
    if db.one("SELECT 1 FROM enrollment_tokens WHERE token_hash = ?", (token.token_hash,)):
        raise StoreError("an enrollment token with this hash exists already")
    db.run(
        "INSERT INTO enrollment_tokens (token_hash, site_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        (token.token_hash, token.site_id, to_micros(token.created_at), to_micros(token.expires_at)),
    )


def get_token(db: Db, token_hash: bytes) -> TokenRecord | None:
    row = db.one(
        "SELECT token_hash, site_id, created_at, expires_at, redeemed_at, agent_id "
        "FROM enrollment_tokens WHERE token_hash = ?",
        (token_hash,),
    )
    if row is None:
        return None
    return TokenRecord(
        token_hash=bytes(row[0]),
        site_id=row[1],
        created_at=from_micros(row[2]),
        expires_at=from_micros(row[3]),
        redeemed_at=opt_from_micros(row[4]),
        agent_id=row[5],
    )


def get_agent(db: Db, agent_id: str) -> AgentRecord | None:
    found = read_agents(db, "agents.agent_id = ?", (agent_id,))
    return found[0] if found else None


def agents_with_current_key(db: Db, keyid: str) -> list[str]:
    """The agents holding `keyid` as a current (not retired) key: one, or none (a key id is
    the SHA-256 of the key, so two agents share one only if they enrolled the same key)."""
    rows = db.all(
        "SELECT agent_id FROM agent_keys WHERE keyid = ? AND retired_at IS NULL ORDER BY agent_id",
        (keyid,),
    )
    return [str(r[0]) for r in rows]


def _must_get_agent(db: Db, agent_id: str) -> AgentRecord:
    agent = get_agent(db, agent_id)
    if agent is None:
        raise AgentUnknownError(f"no agent {agent_id!r}")
    return agent


def enroll(db: Db, request: EnrollmentRequest, now_us: int, options: StoreOptions) -> Enrollment:
    row = db.one(
        "SELECT site_id, expires_at, redeemed_at, agent_id, keyid FROM enrollment_tokens "
        f"WHERE token_hash = ?{db.dialect.for_update}",
        (request.token_hash,),
    )
    if row is None:
        raise TokenInvalidError("unknown enrollment token")
    site_id, expires_at, redeemed_at, agent_id, keyid = row
    if redeemed_at is not None:
        # Same key again: hand back the same agent until it has attested once, so a partial
        # failure (e.g. the response was lost) never burns the token.
        if keyid is not None and hmac.compare_digest(keyid, request.keyid):
            agent = _must_get_agent(db, agent_id)
            if agent.first_attested_at is None and agent.status is AgentStatus.ACTIVE:
                return Enrollment(agent=agent, created=False)
        raise TokenUsedError("enrollment token was used already")
    if now_us >= expires_at:
        raise TokenExpiredError("enrollment token has expired")
    new_id = request.proposed_agent_id
    if db.one("SELECT 1 FROM agents WHERE agent_id = ?", (new_id,)):
        raise StoreError("proposed agent id is taken")
    due = now_us + options.attestation_deadline // _MICRO
    # The agent's number (migration 0017): the next one. The log head lock orders enrollments
    # across PostgreSQL replicas (as it orders accepts), so two never take the same number.
    db.one(f"SELECT size FROM log_head WHERE id = 1{db.dialect.for_update}")
    last = db.one("SELECT MAX(agent_no) FROM agents")
    agent_no = 1 if last is None or last[0] is None else int(last[0]) + 1
    db.run(
        "INSERT INTO agents (agent_id, site_id, hostname, machine_id, status, token_hash, "
        "enrolled_at, last_seq, last_hash, next_due, inventory_fp, agent_no) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (
            new_id,
            site_id,
            request.hostname,
            request.machine_id,
            AgentStatus.ACTIVE.value,
            request.token_hash,
            now_us,
            b"",
            due,
            _NO_INVENTORY,
            agent_no,
        ),
    )
    db.run(
        "INSERT INTO agent_keys (agent_id, keyid, spki_der, added_at) VALUES (?, ?, ?, ?)",
        (new_id, request.keyid, request.spki_der, now_us),
    )
    db.run(
        "UPDATE enrollment_tokens SET redeemed_at = ?, agent_id = ?, keyid = ? "
        "WHERE token_hash = ?",
        (now_us, new_id, request.keyid, request.token_hash),
    )
    audit(db, AuditKind.ENROLLMENT, now_us, new_id, message=f"site {site_id}")
    return Enrollment(agent=_must_get_agent(db, new_id), created=True)


def revoke_agent(db: Db, agent_id: str, now_us: int, reason: str) -> AgentRecord:
    agent = _must_get_agent(db, agent_id)
    if agent.status is AgentStatus.REVOKED:
        return agent
    db.run(
        "UPDATE agents SET status = ?, revoked_at = ? WHERE agent_id = ?",
        (AgentStatus.REVOKED.value, now_us, agent_id),
    )
    audit(db, AuditKind.REVOCATION, now_us, agent_id, message=reason)
    _resolve_revoked(db, agent_id, now_us)
    ops_compliance.new_epoch(db)  # its GPUs left the holdings outside the log
    return _must_get_agent(db, agent_id)


def _resolve_revoked(db: Db, agent_id: str, now_us: int) -> None:
    """Resolve the fleet findings the revoked agent caused, on itself or on the GPUs it
    claimed, recording the reason: its GPUs left the holdings (state `revoked`). A GPU another
    active agent still holds is judged again by the next sweep."""
    uuids = [
        str(r[0]) for r in db.all("SELECT uuid FROM gpu_sightings WHERE agent_id = ?", (agent_id,))
    ]
    subjects = [findings.agent_subject(agent_id), *(findings.gpu_subject(u) for u in uuids)]
    keys: list[tuple[str, str]] = []
    for start in range(0, len(subjects), 900):
        page = subjects[start : start + 900]
        rows = db.all(
            f"SELECT rule, subject FROM findings WHERE status = 'open' "
            f"AND rule IN {db.in_list(len(findings.FLEET_RULES))} "
            f"AND subject IN {db.in_list(len(page))}",
            [*findings.FLEET_RULES, *page],
        )
        keys += [(str(r[0]), str(r[1])) for r in rows]
    resolve_findings(db, keys, now_us, reason=findings.AGENT_REVOKED)


def rotate_key(
    db: Db, agent_id: str, *, spki_der: bytes, keyid: str, now_us: int, reason: str
) -> AgentRecord:
    agent = _must_get_agent(db, agent_id)
    if agent.status is AgentStatus.REVOKED:
        raise AgentRevokedError(f"agent {agent_id!r} is revoked")
    if any(k.keyid == keyid for k in agent.keys):
        raise StoreError("this key was bound to the agent before; rotate to a new key")
    db.run(
        "UPDATE agent_keys SET retired_at = ? WHERE agent_id = ? AND retired_at IS NULL",
        (now_us, agent_id),
    )
    db.run(
        "INSERT INTO agent_keys (agent_id, keyid, spki_der, added_at) VALUES (?, ?, ?, ?)",
        (agent_id, keyid, spki_der, now_us),
    )
    audit(db, AuditKind.ROTATION, now_us, agent_id, message=f"new key {keyid}: {reason}")
    return _must_get_agent(db, agent_id)


_IN_CHUNK = 500

_NONCE_COLUMNS = (
    ("nonce", "bytea"),
    ("issued_at", "bigint"),
    ("expires_at", "bigint"),
    ("replica", "text"),
    ("agent_no", "bigint"),
)


def _agent_numbers(db: Db, agent_ids: Iterable[str]) -> dict[str, int]:
    """The numbers (migration 0017) of those of these agents that are enrolled."""
    wanted = sorted(set(agent_ids))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        found.update(
            (str(agent_id), int(number))
            for agent_id, number in db.all(
                f"SELECT agent_id, agent_no FROM agents WHERE agent_id IN {db.in_list(len(chunk))}",
                chunk,
            )
        )
    return found


def issue_nonces(db: Db, nonces: Sequence[NonceRecord]) -> None:
    """Insert issued nonces, each bound to its agent by number; a retried insert of the same
    random nonce is a no-op. A nonce that leads with its issue time stores no issued_at
    (migration 0017): `get_nonce` reads it from the nonce. A nonce issued to an id no agent has
    (the store probe's) is stored unbound: it proves no freshness to anyone."""
    numbers = _agent_numbers(db, (n.agent_id for n in nonces))
    rows: list[tuple[object, ...]] = []
    for n in nonces:
        issued = to_micros(n.issued_at)
        led = n.nonce[:NONCE_TIME_BYTES] == issued.to_bytes(NONCE_TIME_BYTES, "big")
        rows.append(
            (
                n.nonce,
                None if led else issued,
                to_micros(n.expires_at),
                n.replica,
                numbers.get(n.agent_id),
            )
        )
    db.insert_rows("nonces", _NONCE_COLUMNS, rows, " ON CONFLICT (nonce) DO NOTHING")


def get_nonce(db: Db, nonce: bytes) -> NonceRecord | None:
    row = db.one(
        "SELECT n.nonce, n.issued_at, n.expires_at, n.replica, a.agent_id, n.consumed_at "
        "FROM nonces n LEFT JOIN agents a ON a.agent_no = n.agent_no WHERE n.nonce = ?",
        (nonce,),
    )
    if row is None:
        return None
    issued = row[1]
    if issued is None:  # a time-led nonce (migration 0017)
        issued = int.from_bytes(bytes(row[0])[:NONCE_TIME_BYTES], "big")
    return NonceRecord(
        nonce=bytes(row[0]),
        issued_at=from_micros(issued),
        expires_at=from_micros(row[2]),
        replica=row[3],
        agent_id=row[4] or "",  # NULL: unbound (before migration 0004, or no such agent)
        consumed_at=opt_from_micros(row[5]),
    )


#: Every time-led nonce lies below this key (its first byte is 0x00 until the year 2541);
#: random nonces from before them (migration 0015) led by a greater byte lie at or above it.
_UNTIMED = b"\x01"


def purge_nonces(db: Db, before_us: int) -> int:
    """Delete the nonces that expired before `before_us`: a range of the primary key, since a
    nonce leads with its issue time and is issued before it expires (migration 0015)."""
    purged = db.run(
        "DELETE FROM nonces WHERE nonce < ? AND expires_at < ?",
        (before_us.to_bytes(NONCE_TIME_BYTES, "big"), before_us),
    )
    return purged + db.run(
        "DELETE FROM nonces WHERE nonce >= ? AND expires_at < ?", (_UNTIMED, before_us)
    )


def drop_untimed_nonces(db: Db, applied_at_micros: int) -> None:
    """Data step of migration 0015: delete the random nonces (from before time-led ones) that
    lie below `_UNTIMED`, where no purge range reaches them. Those still unexpired are
    challenges a verifier older than 2026-11-28 sent moments before this upgrade, one in 256 of
    them: evidence answering one is refused as nonce-unknown and the agent is challenged anew."""
    del applied_at_micros
    untimed = [
        (nonce,)
        for nonce, issued_at in db.all(
            "SELECT nonce, issued_at FROM nonces WHERE nonce < ?", (_UNTIMED,)
        )
        if bytes(nonce)[:NONCE_TIME_BYTES] != int(issued_at).to_bytes(NONCE_TIME_BYTES, "big")
    ]
    if untimed:
        db.many("DELETE FROM nonces WHERE nonce = ?", untimed)


def audit(
    db: Db,
    kind: AuditKind,
    at_us: int,
    agent_id: str,
    *,
    code: str = "",
    message: str = "",
    envelope_hash: bytes = b"",
    seq: int = 0,
) -> None:
    db.run(
        "INSERT INTO audit (kind, at, agent_id, code, message, envelope_hash, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind.value, at_us, agent_id, code, message, envelope_hash, seq),
    )


def list_audit(db: Db, limit: int) -> list[AuditRecord]:
    rows = db.all(
        "SELECT kind, at, agent_id, code, message, envelope_hash, seq FROM audit "
        "ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        AuditRecord(
            kind=AuditKind(r[0]),
            at=from_micros(r[1]),
            agent_id=r[2],
            code=r[3],
            message=r[4],
            envelope_hash=bytes(r[5]),
            seq=int(r[6]),
        )
        for r in rows
    ]
