-- Each agent's current full evidence: its envelope hash, which a heartbeat must name to be
-- accepted, and its log index, which holdings name as their evidence (a report samples entries
-- that list GPUs, never a heartbeat that repeats them; docs/protocol.md §4.1). NULL until a full
-- evidence is accepted. Every envelope accepted before heartbeats existed was full evidence, so
-- the chain head is the current full evidence.
ALTER TABLE agents ADD COLUMN full_hash {bytes};
ALTER TABLE agents ADD COLUMN full_log_index BIGINT;
UPDATE agents SET full_hash = last_hash, full_log_index = last_log_index WHERE last_seq > 0;
