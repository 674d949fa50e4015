-- The journal on PostgreSQL: the same tables as the SQLite journal's
-- migrations 1–3, in one step since this store starts here. Times are
-- milliseconds since the Unix epoch; messages are protobuf bytes of
-- retouch.v1 (the columns beside them are what queries filter on).

CREATE TABLE store_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Highest seq removed by retention: resuming after an older one would
    -- miss events.
    compacted_through BIGINT NOT NULL DEFAULT 0
);

-- One row per job, and per submit whose outcome is unknown (no result key).
CREATE TABLE jobs (
    accepted_seq BIGINT PRIMARY KEY,
    result_key TEXT UNIQUE,
    submission_id TEXT UNIQUE,
    api INTEGER NOT NULL,
    status INTEGER NOT NULL,
    last_seq BIGINT NOT NULL,
    finished_at_ms BIGINT,
    job BYTEA NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, accepted_seq);
CREATE INDEX jobs_by_finish ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;

-- Submit intents: written before the upstream call, settled after it.
-- state: 1 pending, 2 accepted, 3 outcome unknown. The unique request_id
-- is what makes a retried request find its first submission.
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    fingerprint BYTEA NOT NULL,
    state INTEGER NOT NULL,
    result_key TEXT,
    created_at_ms BIGINT NOT NULL,
    draft BYTEA NOT NULL
);
CREATE INDEX submissions_by_state ON submissions (state);

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    result_key TEXT NOT NULL,
    event BYTEA NOT NULL
);
CREATE INDEX events_by_key ON events (result_key, seq);
CREATE INDEX events_by_time ON events (time_ms);

-- Results copied from the upstream's temporary URLs into the object store.
-- state: 1 pending, 2 stored, 3 given up.
CREATE TABLE mirrored_results (
    result_key TEXT NOT NULL,
    task_index INTEGER NOT NULL,
    result_index INTEGER NOT NULL,
    upstream_url TEXT NOT NULL,
    state INTEGER NOT NULL,
    sha256 TEXT,
    content_type TEXT,
    size_bytes BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (result_key, task_index, result_index)
);
CREATE INDEX mirrored_results_by_state ON mirrored_results (state);
CREATE INDEX mirrored_results_by_sha256 ON mirrored_results (sha256);
CREATE INDEX mirrored_results_by_age ON mirrored_results (created_at_ms);

-- Images stored through UploadImage, by content (sha256).
CREATE TABLE uploads (
    sha256 TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    filename TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX uploads_by_age ON uploads (created_at_ms);
