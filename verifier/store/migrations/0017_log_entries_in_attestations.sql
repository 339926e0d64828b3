-- What each accepted envelope leaves in the hot tables, cut again (docs/design.md §9).
--
-- Agents get a number: `agent_no`, assigned at enrollment (verifier/store/ops_agents.py) and
-- here in enrollment order. The rows written per envelope and per challenge name their agent
-- by it (2-3 bytes) instead of its 24-character id. NOT NULL with a default only so the column
-- can be added; the unique index then refuses any second row inserted without a number.
ALTER TABLE agents ADD COLUMN agent_no BIGINT NOT NULL DEFAULT 0;
UPDATE agents SET agent_no = r.n
    FROM (SELECT agent_id, ROW_NUMBER() OVER (ORDER BY enrolled_at, agent_id) AS n
          FROM agents) AS r
    WHERE agents.agent_id = r.agent_id;
CREATE UNIQUE INDEX agents_no ON agents (agent_no);

-- Every log entry is an accepted attestation, written in the same transaction under the same
-- log index, so the two were one row's worth of facts kept in two tables: each envelope paid a
-- second row, a second key and a second copy of its envelope hash. The log's leaf hash moves
-- into the attestation's row and `log_entries` goes; the log reads (log_index, leaf_hash,
-- envelope_hash) from `attestations`. The row names its agent by number and says whether its
-- nonce proved it fresh as `fresh` (1: NONCE, 0: OFFLINE) instead of the verdict's name. This
-- copies the table once, in log order. Every entry and every attestation is kept: an entry
-- without its attestation, an attestation without its entry (the second INSERT gives it no
-- leaf hash), an attestation of no enrolled agent or a verdict of neither kind (none of which
-- any verifier wrote) fails the NOT NULL constraints and with them the whole migration,
-- leaving the database as it was.
CREATE TABLE attestations_0017 (
    log_index {index_key},
    agent_no BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    prev_index BIGINT,
    leaf_hash {bytes} NOT NULL,
    envelope_hash {bytes} NOT NULL,
    payload_digest {bytes} NOT NULL,
    fresh SMALLINT NOT NULL,
    created_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
INSERT INTO attestations_0017 (log_index, agent_no, seq, prev_index, leaf_hash, envelope_hash,
        payload_digest, fresh, created_at, received_at)
    SELECT l.log_index, g.agent_no, a.seq, a.prev_index, l.leaf_hash, l.envelope_hash,
        a.payload_digest,
        CASE a.freshness WHEN 'nonce' THEN 1 WHEN 'offline' THEN 0 END,
        a.created_at, a.received_at
    FROM log_entries l
    LEFT JOIN attestations a ON a.log_index = l.log_index
    LEFT JOIN agents g ON g.agent_id = a.agent_id
    ORDER BY l.log_index;
INSERT INTO attestations_0017 (log_index, agent_no, seq, prev_index, leaf_hash, envelope_hash,
        payload_digest, fresh, created_at, received_at)
    SELECT a.log_index, 0, a.seq, a.prev_index, NULL, a.envelope_hash, a.payload_digest, 0,
        a.created_at, a.received_at
    FROM attestations a LEFT JOIN log_entries l ON l.log_index = a.log_index
    WHERE l.log_index IS NULL;
DROP TABLE log_entries;
DROP TABLE attestations;
ALTER TABLE attestations_0017 RENAME TO attestations;
CREATE UNIQUE INDEX attestations_agent_seq ON attestations (agent_no, seq) WHERE (seq & 63) = 0;

-- A challenge nonce names its agent by number too, and, leading with its issue time
-- (migration 0015), no longer repeats it: a time-led nonce issued from now on stores a NULL
-- issued_at, read from its first 8 bytes (the rows copied here keep theirs). The column stays
-- for the random nonces issued before 2026-11-28.
-- A nonce bound to an id no agent has (the store probe's) becomes unbound, as nonces issued
-- before migration 0004 are: it proves no freshness, and no agent was ever sent it. SQLite
-- cannot change a column in place; the table is the nonces' working set (2 x challenge_ttl_s
-- of challenges), so it is copied.
CREATE TABLE nonces_0017 (
    nonce {bytes} PRIMARY KEY,
    issued_at BIGINT,
    expires_at BIGINT NOT NULL,
    replica TEXT NOT NULL,
    consumed_at BIGINT,
    agent_no BIGINT
){without_rowid};
INSERT INTO nonces_0017 (nonce, issued_at, expires_at, replica, consumed_at, agent_no)
    SELECT n.nonce, n.issued_at, n.expires_at, n.replica, n.consumed_at, g.agent_no
    FROM nonces n LEFT JOIN agents g ON g.agent_id = n.agent_id
    ORDER BY n.nonce;
DROP TABLE nonces;
ALTER TABLE nonces_0017 RENAME TO nonces;
