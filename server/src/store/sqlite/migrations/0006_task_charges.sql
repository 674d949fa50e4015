-- The spending caps' counts: one row per submit that may be billed, made
-- in the transaction that records its intent (after counting the rows
-- already in each capped window) and removed with the intent when the
-- submit provably billed nothing. Kept one day, the longest window,
-- whatever the job retention.
CREATE TABLE task_charges (
    submission_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    tasks INTEGER NOT NULL,
    charged_at_ms INTEGER NOT NULL
);
CREATE INDEX task_charges_by_token ON task_charges (token, charged_at_ms, tasks);
CREATE INDEX task_charges_by_age ON task_charges (charged_at_ms, tasks);

-- Request-id tombstones (submissions with an id whose job is gone) are
-- swept by age.
CREATE INDEX submissions_with_ids_by_age ON submissions (created_at_ms)
    WHERE request_id IS NOT NULL;
