-- Finished jobs and old delivery attempts are purged daily (retention).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
