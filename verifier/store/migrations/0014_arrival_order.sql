-- The accept path's tables keyed in arrival order (docs/design.md §9), so the rows a
-- commit writes share pages: each commit then dirties (and the WAL or the server's log then
-- carries) a few tail pages instead of one page per envelope at a random place.
--
-- Merkle nodes: keyed by the tree size at which each subtree became complete, (node_index + 1)
-- << level, then level. Appending leaves completes nodes only at sizes above every stored one,
-- so each commit's nodes land at the end of the table; keyed by (level, node_index), as in
-- migration 0009, they landed at the end of each level's range: one page per level a commit
-- reached. node_index is (tree_size >> level) - 1; it is not stored.
CREATE TABLE log_nodes_0014 (
    tree_size BIGINT NOT NULL,
    level INTEGER NOT NULL,
    hash {bytes} NOT NULL,
    PRIMARY KEY (tree_size, level)
){without_rowid};
INSERT INTO log_nodes_0014 (tree_size, level, hash)
    SELECT (node_index + 1) << level, level, hash FROM log_nodes ORDER BY 1, 2;
DROP TABLE log_nodes;
ALTER TABLE log_nodes_0014 RENAME TO log_nodes;

-- Envelope bytes by log index: appended in log order, with no second index. `blobs` (by
-- SHA-256, from migration 0001) keeps the envelopes accepted before this migration and is read
-- after this table; `log archive` drains both. Nothing is copied here, so the migration takes
-- the same time at any log size.
CREATE TABLE envelopes (
    log_index {index_key},
    body {bytes} NOT NULL
);

-- Attestations by log index, each naming its agent's previous one (prev_index: the log index
-- of seq - 1, NULL at seq 1). Keyed by (agent_id, seq) (migration 0001) each row went into its
-- agent's range of the table: one leaf, and often a split and its parent, per envelope, the
-- most pages a commit wrote; a full (agent_id, seq) index still cost a leaf per envelope at a
-- random place. So only every 64th seq of a chain is indexed, and (agent, seq) is found from
-- the next indexed seq, or the agent's head, by at most 63 prev_index steps
-- (verifier/store/ops_chain.py). A chain holds each seq once by its compare-and-set on the
-- agent's head, as before. This copies the table once, in log order.
CREATE TABLE attestations_0014 (
    log_index {index_key},
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    prev_index BIGINT,
    envelope_hash {bytes} NOT NULL,
    payload_digest {bytes} NOT NULL,
    freshness TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
INSERT INTO attestations_0014 (log_index, agent_id, seq, prev_index, envelope_hash,
        payload_digest, freshness, created_at, received_at)
    SELECT log_index, agent_id, seq,
        LAG(log_index) OVER (PARTITION BY agent_id ORDER BY seq),
        envelope_hash, payload_digest, freshness, created_at, received_at
    FROM attestations ORDER BY log_index;
DROP TABLE attestations;
ALTER TABLE attestations_0014 RENAME TO attestations;
CREATE UNIQUE INDEX attestations_agent_seq ON attestations (agent_id, seq) WHERE (seq & 63) = 0;
