-- When the agent's current full evidence was created (its clock, µs): a heartbeat created more
-- than MAX_BASE_AGE after it is refused, so no agent repeats one inventory for longer
-- (docs/protocol.md §4.1). Before heartbeats every accepted envelope was full evidence, so the
-- chain's latest creation time stands for it.
ALTER TABLE agents ADD COLUMN full_created_at BIGINT;
UPDATE agents SET full_created_at = last_seen_at WHERE last_seq > 0;
