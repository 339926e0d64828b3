-- The findings listings walk (opened_at, rule, subject) in keyset pages; without an index in
-- that order every page would scan and sort the table, O(n^2 / page) for one listing. The
-- listing of open findings gets (status, ...) so that it never walks resolved history; it
-- replaces the index on status alone, which planners without statistics preferred to it.
DROP INDEX findings_status;
CREATE INDEX findings_listing ON findings (opened_at, rule, subject);
CREATE INDEX findings_status_listing ON findings (status, opened_at, rule, subject);
