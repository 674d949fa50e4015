-- Which named token submitted each job, for ListJobs filters. Older rows
-- (and adopted jobs) have none.
ALTER TABLE jobs ADD COLUMN submitted_by TEXT;
CREATE INDEX jobs_by_submitter ON jobs (submitted_by, accepted_seq);
