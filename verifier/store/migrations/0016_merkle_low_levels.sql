-- Merkle subtrees of levels 1-3 are hashed from their leaves (at most 8) when a proof needs
-- them, not stored (verifier/store/ops_log.py, STORED_LEVEL): they were seven nodes in eight,
-- ~41 bytes of every log entry. Derived data only; every root and proof reads the same.
DELETE FROM log_nodes WHERE level < 4;
