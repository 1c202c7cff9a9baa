-- Policy versions, activations and approvals (as the SQLite STATE/policies.sqlite3), and the
-- public half of the key every node signs policy bundles with. Times are Unix seconds.
CREATE TABLE policy_versions (
    tenant     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    text       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    comment    TEXT,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE policy_history (
    id       BIGSERIAL PRIMARY KEY,
    tenant   TEXT NOT NULL,
    action   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    at       BIGINT NOT NULL,
    reason   TEXT,
    approval BIGINT
);
CREATE INDEX policy_history_tenant ON policy_history (tenant, id);
CREATE TABLE policy_active (
    tenant  TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
CREATE TABLE policy_approvals (
    id           BIGSERIAL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    requester    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    status       TEXT NOT NULL,
    decided_by   TEXT,
    decided_at   BIGINT
);
CREATE INDEX policy_approvals_tenant ON policy_approvals (tenant, id);
-- The bundle serial: bumped (row locked until commit) by every change of an active version, so
-- serials follow commit order across tenants and nodes.
INSERT INTO counters (name, value) VALUES ('policy_serial', 0);
-- One row: the policy signing key's public half, stored by the first node to start.
CREATE TABLE policy_signing_key (
    singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    public_key_der BYTEA NOT NULL,
    key_id         TEXT NOT NULL,
    stored_at      BIGINT NOT NULL
);
