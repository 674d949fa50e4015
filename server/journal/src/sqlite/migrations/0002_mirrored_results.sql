-- Results copied from the upstream's temporary URLs into retouchd's object
-- store, content-addressed by sha256. A row is written (pending) in the same
-- transaction as the SUCCESS transition that produced its URL.
-- state: 1 pending, 2 stored, 3 given up.
CREATE TABLE mirrored_results (
    result_key TEXT NOT NULL,
    task_index INTEGER NOT NULL,
    result_index INTEGER NOT NULL,
    upstream_url TEXT NOT NULL,
    state INTEGER NOT NULL,
    sha256 TEXT,
    content_type TEXT,
    size_bytes INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (result_key, task_index, result_index)
);
CREATE INDEX mirrored_results_by_state ON mirrored_results (state);
CREATE INDEX mirrored_results_by_sha256 ON mirrored_results (sha256);
CREATE INDEX mirrored_results_by_age ON mirrored_results (created_at_ms);
