-- The transparency log's Merkle tree (docs/design.md §9): the hash of every complete aligned
-- subtree of level >= 1, (level, node_index) covering leaves [node_index * 2^level,
-- (node_index + 1) * 2^level); level 0 is log_entries.leaf_hash. Written in the accept
-- transaction that appends the leaf completing the subtree, so roots and proofs read O(log n)
-- rows. A log that already has entries is backfilled by this migration's data step
-- (verifier/store/ops_log.py backfill_nodes).
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    node_index BIGINT NOT NULL,
    hash {bytes} NOT NULL,
    PRIMARY KEY (level, node_index)
){without_rowid};
