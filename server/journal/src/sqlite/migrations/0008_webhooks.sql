-- Webhook endpoints and the outbox of their deliveries.

-- An endpoint belongs to the token that created it (owner, '' without
-- tokens). event_mask holds one bit per event type (webhooks.rs). The
-- secrets are sealed by retouchd: the journal never holds them in the
-- clear. failing_since: since when every attempt has failed.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    event_mask INTEGER NOT NULL,
    all_jobs INTEGER NOT NULL,
    sealed_secret BLOB NOT NULL,
    previous_secret BLOB,
    previous_until_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    disabled_reason TEXT,
    failing_since_ms INTEGER
);
CREATE INDEX webhook_endpoints_by_owner ON webhook_endpoints (owner, all_jobs);

-- Endpoints a submit named: they receive its job's events. Written with
-- the submission, so they hold before its first event.
CREATE TABLE webhook_subscriptions (
    submission_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    PRIMARY KEY (submission_id, endpoint_id)
);
CREATE INDEX webhook_subscriptions_by_endpoint ON webhook_subscriptions (endpoint_id);

-- What a delivery sends: the event and its job after the event's step,
-- kept apart from the event log so that its retention never takes a
-- payload still to be sent. One row per event that has deliveries.
CREATE TABLE webhook_messages (
    seq INTEGER PRIMARY KEY,
    event BLOB NOT NULL,
    job BLOB NOT NULL
);

-- One row per (event, endpoint), written in the transaction of the event.
-- next_attempt_ms: when it is due; NULL while its endpoint is disabled
-- (parked, out of the claims' way, until the endpoint is enabled).
-- state: 1 pending, 2 delivered, 3 failed. lease_owner: the process
-- sending it now (a process that is not live holds nothing).
CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type_mask INTEGER NOT NULL,
    result_key TEXT NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,
    last_status INTEGER,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    last_attempt_ms INTEGER,
    lease_owner TEXT,
    -- 0: the event itself; 1: the batch.finished of the batch (batch_id)
    -- whose last job the event finished.
    kind INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    PRIMARY KEY (endpoint_id, seq, kind)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms, seq) WHERE state = 1;
CREATE INDEX webhook_deliveries_by_seq ON webhook_deliveries (seq);
CREATE INDEX webhook_deliveries_by_key ON webhook_deliveries (result_key, seq);
-- Each endpoint's pending count, read with the endpoint.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id) WHERE state = 1;
-- Listings by state.
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (state, seq);
-- Retention: sent and failed deliveries by their last attempt.
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (COALESCE(last_attempt_ms, created_at_ms))
    WHERE state != 1;

-- How many jobs a batch has, and the seq of the event that finished its
-- last one (its batch.finished), once. Batches recorded before this have
-- no count, and no batch.finished.
ALTER TABLE batches ADD COLUMN job_count INTEGER;
ALTER TABLE batches ADD COLUMN finished_seq INTEGER;
