-- Who created a bootstrap token through the admin API: a request made with it is theirs too
-- (they may not approve it). NULL: made on the CA's host, or before this column.
ALTER TABLE bootstrap_tokens ADD COLUMN created_by TEXT;
