-- Batches: many jobs submitted as one. Each job of a batch is an ordinary
-- submission whose request id is `batch-<id>/<index>`; this row holds the
-- plan (which tasks went to which job) and the batch's own idempotency key.
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    fingerprint BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    plan BYTEA NOT NULL
);
CREATE INDEX batches_by_age ON batches (created_at_ms);
