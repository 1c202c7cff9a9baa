-- The certificate inventory (as the CA's SQLite inventory.sqlite3) and the bootstrap tokens
-- (as tokens.sqlite3). Times are Unix seconds.
CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,
    subject           TEXT NOT NULL,
    sans              JSONB NOT NULL,
    tenant            TEXT NOT NULL,
    profile           TEXT NOT NULL,
    requester         TEXT NOT NULL,
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    cert_der          BYTEA NOT NULL,
    revoked_at        BIGINT,
    revocation_reason SMALLINT,
    renewed_from      TEXT
);
CREATE INDEX certificates_tenant ON certificates (tenant, not_after);
CREATE INDEX certificates_not_after ON certificates (not_after);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_renewed_from ON certificates (renewed_from) WHERE renewed_from IS NOT NULL;
CREATE INDEX certificates_sans ON certificates USING GIN (sans);

CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO counters (name, value) VALUES ('crl_number', 0);

CREATE TABLE bootstrap_tokens (
    hash       BYTEA PRIMARY KEY,
    id         TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    spiffe_id  TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX bootstrap_tokens_tenant ON bootstrap_tokens (tenant, created_at);
