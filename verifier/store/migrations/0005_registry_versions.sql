-- Registry history (docs/design.md §6): every `registry import` is kept as a version, so a
-- reconciliation at a past date judges the fleet against the registry of that date. `source` is
-- the file as read (for the record), `digest` its SHA-256, `content` the parsed registry as JSON
-- (what `load_registry(at=...)` reads back, so the store never runs the parser). The reg_*
-- tables keep the current version for the hot paths.
CREATE TABLE registry_versions (
    version {auto_id},
    imported_at BIGINT NOT NULL,
    imported_by TEXT NOT NULL,
    digest {bytes} NOT NULL,
    source {bytes} NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX registry_versions_at ON registry_versions (imported_at);

-- A site that reports only through `ingest` is judged against its own deadline (NULL: the
-- fleet-wide attestation deadline), in whole seconds.
ALTER TABLE reg_sites ADD COLUMN offline_deadline_s BIGINT;
