-- Cells are recorded before their provider has made them, so provisioning
-- can be a job that resumes after a crash: what the provider made, its last
-- progress report and error live on the cell.
ALTER TABLE cells ADD COLUMN resource TEXT;
ALTER TABLE cells ADD COLUMN progress TEXT;
ALTER TABLE cells ADD COLUMN last_error TEXT;
ALTER TABLE cells ADD COLUMN updated_at TEXT;
