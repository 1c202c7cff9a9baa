-- The region whose CA issued a certificate (`ca init --region`); NULL: a CA without one.
ALTER TABLE certificates ADD COLUMN region TEXT;
