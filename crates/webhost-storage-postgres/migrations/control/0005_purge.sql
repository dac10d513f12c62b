-- Finished jobs are purged daily (the purge_jobs cron job).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
