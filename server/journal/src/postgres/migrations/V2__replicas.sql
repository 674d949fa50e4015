-- Several replicas on one database.

-- The event counter. A step locks this row first and numbers its events
-- from it; the next step can lock it only once this one has committed, so
-- seqs become visible in commit order and a reader never sees seq 11
-- before seq 10. (A sequence hands out numbers before commit: a reader
-- could see 11 commit first and skip 10 for good.)
CREATE TABLE event_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO event_head (id, seq)
SELECT 1, GREATEST(
    (SELECT COALESCE(MAX(seq), 0) FROM events),
    (SELECT COALESCE(MAX(last_seq), 0) FROM jobs),
    (SELECT COALESCE(MAX(compacted_through), 0) FROM store_meta));

-- Leases on active jobs: only the holder polls a job and writes its news.
-- lease_epoch is the fencing token: every claim raises it, every step
-- checks it. Times are the database's clock, never a replica's.
ALTER TABLE jobs
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at TIMESTAMPTZ;
CREATE INDEX jobs_by_lease ON jobs (lease_expires_at NULLS FIRST) WHERE status = 1;
CREATE INDEX jobs_by_owner ON jobs (lease_owner) WHERE status = 1;

-- Which replica made a submit intent: only it may settle a pending one
-- while it lives; once it stops heartbeating another replica records the
-- outcome as unknown (NULL: made before replicas existed).
ALTER TABLE submissions ADD COLUMN replica_id TEXT;

-- Live replicas: each renews its row; one whose row expired is gone.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
