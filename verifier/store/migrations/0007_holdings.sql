-- Holdings for compliance reconciliation (docs/design.md §9). The sightings gain what the
-- catalogue classifies on (subsystem id), what power-implausible checks (enforced limit) and
-- the receipt time of the evidence that first showed the GPU; rows from before this migration
-- take their first_seen and are reclassified on their agent's next inventory change.
ALTER TABLE gpu_sightings ADD COLUMN pci_subsystem_id BIGINT;
ALTER TABLE gpu_sightings ADD COLUMN power_limit_w BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gpu_sightings ADD COLUMN first_received BIGINT;
UPDATE gpu_sightings SET first_received = first_seen;

-- Presence history: one interval per stay of a GPU at an agent with the same attributes,
-- opened and closed (to_us) only when an accepted inventory changes, in receipt time, so that
-- holdings "as of the end of a date" never count evidence received later.
CREATE TABLE gpu_presence (
    uuid TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    from_us BIGINT NOT NULL,
    to_us BIGINT,
    site_id TEXT NOT NULL,
    pci_device_id BIGINT,
    pci_subsystem_id BIGINT,
    power_limit_w BIGINT NOT NULL,
    first_received BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    PRIMARY KEY (uuid, agent_id, from_us)
){without_rowid};
CREATE INDEX gpu_presence_from ON gpu_presence (from_us);
INSERT INTO gpu_presence (uuid, agent_id, from_us, to_us, site_id, pci_device_id,
    pci_subsystem_id, power_limit_w, first_received, log_index)
    SELECT uuid, agent_id, first_seen, NULL, site_id, pci_device_id, NULL, 0, first_seen,
    last_log_index FROM gpu_sightings WHERE present = 1;

-- Posture per agent: the latest attested checks (a canonical JSON object name -> result), and
-- a history row only when they change, for reconciliation at a past date.
CREATE TABLE agent_posture (
    agent_id TEXT PRIMARY KEY,
    checks TEXT NOT NULL,
    since_us BIGINT NOT NULL,
    log_index BIGINT NOT NULL
){without_rowid};
CREATE TABLE posture_history (
    agent_id TEXT NOT NULL,
    from_us BIGINT NOT NULL,
    checks TEXT NOT NULL,
    log_index BIGINT NOT NULL,
    PRIMARY KEY (agent_id, from_us)
){without_rowid};
