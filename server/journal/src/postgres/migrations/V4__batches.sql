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

-- Why a job of a batch was not submitted (the last refusal that billed
-- nothing), so that reading the batch later still says why. A later
-- accepted submit of the job makes it moot; it goes with its batch.
CREATE TABLE batch_submit_errors (
    batch_id TEXT NOT NULL,
    job_index INTEGER NOT NULL,
    error BYTEA NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (batch_id, job_index)
);
