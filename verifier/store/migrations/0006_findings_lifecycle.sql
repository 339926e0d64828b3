-- Findings lifecycle (docs/design.md §5): a stable numeric id per episode of a finding (the
-- handle `findings ack ID` takes), who acknowledged it and why, and what cleared it: the log
-- index of the accepted evidence that made the rule stop holding, or a reason ("agent
-- revoked"). `status` stays 'open' while acknowledged (the condition still holds), so every
-- query over active findings and the listing indexes keep working; acknowledged_at set on an
-- open row is the acknowledged state. Ids come from one counter row, taken in the writing
-- transaction; existing findings are numbered in listing order.
ALTER TABLE findings ADD COLUMN id BIGINT;
ALTER TABLE findings ADD COLUMN acknowledged_at BIGINT;
ALTER TABLE findings ADD COLUMN acknowledged_by TEXT;
ALTER TABLE findings ADD COLUMN ack_reason TEXT;
ALTER TABLE findings ADD COLUMN cleared_by_log_index BIGINT;
ALTER TABLE findings ADD COLUMN resolved_reason TEXT;
UPDATE findings SET id = t.n FROM (
    SELECT rule, subject, ROW_NUMBER() OVER (ORDER BY opened_at, rule, subject) AS n
    FROM findings
) AS t WHERE t.rule = findings.rule AND t.subject = findings.subject;
CREATE UNIQUE INDEX findings_id ON findings (id);
CREATE TABLE finding_ids (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    next_id BIGINT NOT NULL
);
INSERT INTO finding_ids (one, next_id) SELECT 1, COALESCE(MAX(id), 0) + 1 FROM findings;

-- Fleet states: what identifies a board to a licence officer (serial, board part number, as the
-- agent read them; NULL when unreadable) and whether the agent reported the GPU lost (fallen off
-- the bus: still counted, never `present`).
ALTER TABLE gpu_sightings ADD COLUMN serial TEXT;
ALTER TABLE gpu_sightings ADD COLUMN board_part_number TEXT;
ALTER TABLE gpu_sightings ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
