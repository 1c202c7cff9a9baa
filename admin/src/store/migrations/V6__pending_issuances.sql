-- First issuances waiting for approval (as the SQLite STATE/pending.sqlite3), shared by every
-- admin server: the request as the CA checked it, who asked, the SHA-256 of the pickup secret
-- (never the secret), and what became of it. Times are Unix seconds.
CREATE TABLE pending_issuances (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    profile          TEXT NOT NULL,
    csr              BYTEA NOT NULL,
    lifetime_secs    BIGINT,
    requester_kind   TEXT NOT NULL,
    requester_id     TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    token_created_by TEXT,
    spiffe_id        TEXT,
    dns_names        TEXT NOT NULL,
    secret_hash      BYTEA NOT NULL CHECK (length(secret_hash) = 32),
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    state            TEXT NOT NULL
        CHECK (state IN ('pending', 'approving', 'approved', 'rejected')),
    decided_by       TEXT,
    decided_at       BIGINT,
    reason           TEXT,
    serial           TEXT,
    response         TEXT
);
CREATE INDEX pending_issuances_by_tenant ON pending_issuances (tenant, created_at);
CREATE INDEX pending_issuances_expiry ON pending_issuances (expires_at);
