-- Incremental reconciliation (docs/design.md §14). Every accepted attestation that changed
-- what its host holds writes what changed per (site, PCI identity) here, in the accept
-- transaction and under its log index; `serve` applies the journal from the log position its
-- findings were derived at, so every replica sees every replica's changes, in log order.
CREATE TABLE holdings_journal (
    log_index BIGINT NOT NULL,
    site_id TEXT NOT NULL,
    pci_device_id BIGINT,
    pci_subsystem_id BIGINT,
    units BIGINT NOT NULL,
    power_w BIGINT NOT NULL,
    received_us BIGINT NOT NULL
);
CREATE INDEX holdings_journal_log ON holdings_journal (log_index);
CREATE INDEX posture_history_log ON posture_history (log_index);
-- An agent's presence intervals, for its holdings at a past date when it had no posture yet.
CREATE INDEX gpu_presence_agent ON gpu_presence (agent_id, from_us);

-- One row. `epoch` changes with what changes holdings or their judgment outside the log (a
-- revocation, a registry import): a live reconciliation of another epoch starts again in full.
-- Journal rows below `journal_floor` were pruned. `findings_at` is the log position the stored
-- compliance findings were derived at: an older derivation (a lagging replica) does not
-- overwrite a newer one.
CREATE TABLE compliance_state (
    id INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL,
    journal_floor BIGINT NOT NULL,
    findings_at BIGINT NOT NULL
);
INSERT INTO compliance_state (id, epoch, journal_floor, findings_at) VALUES (1, 0, 0, 0);
