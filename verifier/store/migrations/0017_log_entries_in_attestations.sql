-- Every log entry is an accepted attestation, written in the same transaction under the same
-- log index, so the two were one row's worth of facts kept in two tables: each envelope paid a
-- second row, a second key and a second copy of its envelope hash (on SQLite ~52 bytes, on
-- PostgreSQL ~89 with the tuple header and the index entry; docs/design.md §9). The log's
-- leaf hash moves into the attestation's row and `log_entries` goes; the log reads
-- (log_index, leaf_hash, envelope_hash) from `attestations`. This copies the table once, in
-- log order. The log is the authority: every entry is kept, and an entry without its
-- attestation (which no verifier wrote) fails the NOT NULL constraints and with them the
-- whole migration, leaving the database as it was.
CREATE TABLE attestations_0017 (
    log_index {index_key},
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    prev_index BIGINT,
    leaf_hash {bytes} NOT NULL,
    envelope_hash {bytes} NOT NULL,
    payload_digest {bytes} NOT NULL,
    freshness TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
INSERT INTO attestations_0017 (log_index, agent_id, seq, prev_index, leaf_hash, envelope_hash,
        payload_digest, freshness, created_at, received_at)
    SELECT l.log_index, a.agent_id, a.seq, a.prev_index, l.leaf_hash, l.envelope_hash,
        a.payload_digest, a.freshness, a.created_at, a.received_at
    FROM log_entries l LEFT JOIN attestations a ON a.log_index = l.log_index
    ORDER BY l.log_index;
DROP TABLE log_entries;
DROP TABLE attestations;
ALTER TABLE attestations_0017 RENAME TO attestations;
CREATE UNIQUE INDEX attestations_agent_seq ON attestations (agent_id, seq) WHERE (seq & 63) = 0;

-- A challenge nonce leads with its issue time (migration 0015), so its row no longer repeats
-- it: issued_at is NULL for a time-led nonce and read from the nonce's first 8 bytes
-- (verifier/store/ops_agents.py). The column stays for the random nonces issued before
-- 2026-11-28. SQLite cannot drop a NOT NULL constraint in place; the table is the nonces'
-- working set (2 x challenge_ttl_s of challenges), so it is copied.
CREATE TABLE nonces_0017 (
    nonce {bytes} PRIMARY KEY,
    issued_at BIGINT,
    expires_at BIGINT NOT NULL,
    replica TEXT NOT NULL,
    consumed_at BIGINT,
    agent_id TEXT
){without_rowid};
INSERT INTO nonces_0017 (nonce, issued_at, expires_at, replica, consumed_at, agent_id)
    SELECT nonce, issued_at, expires_at, replica, consumed_at, agent_id FROM nonces;
DROP TABLE nonces;
ALTER TABLE nonces_0017 RENAME TO nonces;
