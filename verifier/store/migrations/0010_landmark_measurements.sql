-- Landmark statements carried in accepted evidence (docs/design.md §16), one row each, written
-- in the accept transaction under the evidence's log index. The statement bytes are kept as
-- carried until the location pass checks them once against the registry's landmark key and the
-- agent's keys and records the verdict ("valid", or the reason it does not count; NULL until
-- checked); then they are dropped from the row (the logged envelope keeps them). Only valid
-- rows carry the figures.
CREATE TABLE landmark_measurements (
    log_index BIGINT NOT NULL,
    position INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    landmark_id TEXT NOT NULL,
    received_us BIGINT NOT NULL,
    statement {bytes} NOT NULL,
    verdict TEXT,
    rtt_min_ns BIGINT,
    probes INTEGER,
    measured_us BIGINT,
    PRIMARY KEY (log_index, position)
);
CREATE INDEX landmark_measurements_unchecked ON landmark_measurements (verdict, log_index);
CREATE INDEX landmark_measurements_measured ON landmark_measurements (measured_us);
