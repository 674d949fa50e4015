-- The spending caps' counts: one row per submit that may be billed, made
-- in the transaction that records its intent (after counting the rows
-- already in each capped window, under advisory locks that serialise the
-- count across replicas) and removed with the intent when the submit
-- provably billed nothing. Kept one day, the longest window, whatever the
-- job retention.
CREATE TABLE task_charges (
    submission_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    charged_at_ms BIGINT NOT NULL
);
CREATE INDEX task_charges_by_token ON task_charges (token, charged_at_ms) INCLUDE (tasks);
CREATE INDEX task_charges_by_age ON task_charges (charged_at_ms) INCLUDE (tasks);

-- Each charge summed into its token's bucket of the minute and of the hour
-- it was made in (in the same transaction; taken back with it), so that a
-- window is counted from at most a minute of charges and about 85 buckets.
CREATE TABLE task_charge_buckets (
    token TEXT NOT NULL,
    width_ms BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    tasks BIGINT NOT NULL,
    PRIMARY KEY (token, width_ms, start_ms)
);
CREATE INDEX task_charge_buckets_by_start ON task_charge_buckets (width_ms, start_ms);

-- Request-id tombstones (submissions with an id whose job is gone) are
-- swept by age.
CREATE INDEX submissions_with_ids_by_age ON submissions (created_at_ms)
    WHERE request_id IS NOT NULL;
