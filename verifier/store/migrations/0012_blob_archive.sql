-- Envelope bytes that `log archive` moved out of `blobs` into a segment file under the archive
-- directory (docs/design.md §9, verifier/store/segments.py): the segment (SHA-256 of the file)
-- and the frame that holds each. A row is written in the transaction that deletes the blob,
-- after the segment is durable, so every envelope is in exactly one of the two tables.
CREATE TABLE blob_archive (
    hash {bytes} PRIMARY KEY,
    segment {bytes} NOT NULL,
    frame_offset BIGINT NOT NULL,
    frame_length BIGINT NOT NULL
){without_rowid};
