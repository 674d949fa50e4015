-- The batch a submission belongs to, as a column: the queries that find a
-- batch's jobs (compaction) compare it instead of parsing request ids.
-- Generated from the request id, `batch-<id>/<index>` for a batch's jobs
-- (jobs.proto, `Job.batch_id`), so that it holds for every row whoever
-- wrote it: rows written before this migration, and rows a replica of an
-- older version writes while a cluster is upgraded. SQLite adds generated
-- columns as VIRTUAL only; the index stores it.
ALTER TABLE submissions ADD COLUMN batch_id TEXT GENERATED ALWAYS AS (
    CASE WHEN request_id GLOB 'batch-?*/*'
         THEN substr(request_id, 7, instr(request_id, '/') - 7)
    END
) VIRTUAL;
CREATE INDEX submissions_by_batch ON submissions (batch_id) WHERE batch_id IS NOT NULL;
