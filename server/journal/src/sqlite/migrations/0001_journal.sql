-- The journal's first schema: identity, jobs, submit intents, events.
-- Times are milliseconds since the Unix epoch; messages are protobuf bytes
-- of retouch.v1 (the columns beside them are what queries filter on).

CREATE TABLE store_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    store_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    -- Highest seq removed by retention: resuming after an older one would
    -- miss events.
    compacted_through INTEGER NOT NULL DEFAULT 0
);

-- One row per job, and per submit whose outcome is unknown (no result key).
CREATE TABLE jobs (
    accepted_seq INTEGER PRIMARY KEY,
    result_key TEXT UNIQUE,
    submission_id TEXT UNIQUE,
    api INTEGER NOT NULL,
    status INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    finished_at_ms INTEGER,
    job BLOB NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, accepted_seq);
CREATE INDEX jobs_by_finish ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;

-- Submit intents: written before the upstream call, settled after it.
-- state: 1 pending, 2 accepted, 3 outcome unknown.
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    fingerprint BLOB NOT NULL,
    state INTEGER NOT NULL,
    result_key TEXT,
    created_at_ms INTEGER NOT NULL,
    draft BLOB NOT NULL
);
CREATE INDEX submissions_by_state ON submissions (state);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    result_key TEXT NOT NULL,
    event BLOB NOT NULL
);
CREATE INDEX events_by_key ON events (result_key, seq);
CREATE INDEX events_by_time ON events (time_ms);
