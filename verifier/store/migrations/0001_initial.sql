-- Initial schema. Written once for both dialects; the runner substitutes {bytes} (BLOB or
-- BYTEA), {auto_id} (the dialect's auto-increment primary key) and {without_rowid} (SQLite's
-- clustered-key table option for small keyed rows; nothing on PostgreSQL). Times are integer
-- microseconds since the Unix epoch (UTC) so both dialects compare them the same way.

CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    status TEXT NOT NULL,
    token_hash {bytes} NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    last_hash {bytes} NOT NULL,
    first_attested_at BIGINT,
    last_seen_at BIGINT,
    last_fresh_at BIGINT,
    next_due BIGINT NOT NULL,
    revoked_at BIGINT,
    inventory_fp {bytes} NOT NULL,
    last_log_index BIGINT
);
CREATE INDEX agents_next_due ON agents (next_due);
CREATE INDEX agents_token ON agents (token_hash);

CREATE TABLE agent_keys (
    agent_id TEXT NOT NULL,
    keyid TEXT NOT NULL,
    spki_der {bytes} NOT NULL,
    added_at BIGINT NOT NULL,
    retired_at BIGINT,
    PRIMARY KEY (agent_id, keyid)
){without_rowid};

CREATE TABLE enrollment_tokens (
    token_hash {bytes} PRIMARY KEY,
    site_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    agent_id TEXT,
    keyid TEXT
);

CREATE TABLE nonces (
    nonce {bytes} PRIMARY KEY,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    replica TEXT NOT NULL,
    consumed_at BIGINT
){without_rowid};
CREATE INDEX nonces_expires ON nonces (expires_at);

-- Envelope bytes verbatim, content-addressed, away from the hot tables.
CREATE TABLE blobs (
    hash {bytes} PRIMARY KEY,
    body {bytes} NOT NULL
);

CREATE TABLE attestations (
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    envelope_hash {bytes} NOT NULL,
    payload_digest {bytes} NOT NULL,
    freshness TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    PRIMARY KEY (agent_id, seq)
){without_rowid};

-- One row: the size of the transparency log. Accept transactions lock it first, which orders
-- them across replicas and keeps log indices gapless.
CREATE TABLE log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO log_head (id, size) VALUES (1, 0);

CREATE TABLE log_entries (
    log_index BIGINT PRIMARY KEY,
    leaf_hash {bytes} NOT NULL,
    envelope_hash {bytes} NOT NULL
){without_rowid};

-- One row per (GPU, claiming agent); `present` rows take their last_seen from the agent row
-- so an unchanged heartbeat rewrites no GPU row.
CREATE TABLE gpu_sightings (
    uuid TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    name TEXT NOT NULL,
    pci_device_id BIGINT,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    present INTEGER NOT NULL,
    last_log_index BIGINT NOT NULL,
    PRIMARY KEY (uuid, agent_id)
){without_rowid};
CREATE INDEX gpu_sightings_agent ON gpu_sightings (agent_id);

CREATE TABLE findings (
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    resolved_at BIGINT,
    PRIMARY KEY (rule, subject)
){without_rowid};
CREATE INDEX findings_status ON findings (status);

CREATE TABLE audit (
    id {auto_id},
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    envelope_hash {bytes} NOT NULL,
    seq BIGINT NOT NULL
);

CREATE TABLE reg_entities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hq_country TEXT NOT NULL,
    parent_hq_country TEXT NOT NULL,
    veu TEXT NOT NULL
);

CREATE TABLE reg_sites (
    id TEXT PRIMARY KEY,
    entity TEXT NOT NULL,
    country TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    facility_power_kw DOUBLE PRECISION
);

-- countries and sites: comma-separated ids (ids never contain commas; the parser checks).
CREATE TABLE reg_authorizations (
    id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    kind TEXT NOT NULL,
    countries TEXT NOT NULL,
    sites TEXT NOT NULL,
    max_units BIGINT,
    max_tpp DOUBLE PRECISION,
    valid_from TEXT NOT NULL,
    valid_until TEXT
);

CREATE TABLE reg_landmarks (
    id TEXT PRIMARY KEY,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    public_key {bytes} NOT NULL
);

CREATE TABLE reg_arrangements (
    country TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (country, since)
);
