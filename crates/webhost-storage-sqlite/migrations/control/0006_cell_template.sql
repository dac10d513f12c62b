-- The catalog template a cell is made from (placement tells a stop-gap
-- cell from a regular one by it).
ALTER TABLE cells ADD COLUMN template TEXT;
