-- The batch a submission belongs to, as a column: the queries that find a
-- batch's jobs (compaction) compare it instead of parsing request ids.
-- Generated from the request id, `batch-<id>/<index>` for a batch's jobs
-- (jobs.proto, `Job.batch_id`), so that it holds for every row whoever
-- wrote it: rows written before this migration, and rows a replica of an
-- older version writes while the cluster is upgraded.
ALTER TABLE submissions ADD COLUMN batch_id TEXT GENERATED ALWAYS AS (
    CASE WHEN request_id LIKE 'batch-_%/%'
         THEN split_part(substr(request_id, 7), '/', 1)
    END
) STORED;
CREATE INDEX submissions_by_batch ON submissions (batch_id) WHERE batch_id IS NOT NULL;
