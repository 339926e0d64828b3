-- Offline ingest finds an envelope's agent from its signature's key id. The primary key is
-- (agent_id, keyid), so without this index that lookup scans every agent's keys, and the
-- ingest command used to load them all into memory instead (O(fleet) per run).
CREATE INDEX agent_keys_keyid ON agent_keys (keyid);
