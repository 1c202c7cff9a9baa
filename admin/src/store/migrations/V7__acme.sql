-- The ACME server's state, shared by every admin server (as the SQLite STATE/acme.sqlite3,
-- plus what a single node keeps in memory): EAB keys (the HMAC key sealed with AES-256-GCM
-- under STATE/acme-eab.key, whose key id every node checks against acme_seal_key at start),
-- accounts, issued certificates, replay nonces, orders and their authorizations. Times are
-- Unix seconds.
CREATE TABLE acme_seal_key (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    key_id    TEXT NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE TABLE acme_eab_keys (
    kid        TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    profile    TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    account    BIGINT
);
CREATE TABLE acme_accounts (
    id         BIGSERIAL PRIMARY KEY,
    thumbprint TEXT UNIQUE NOT NULL,
    jwk        TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    profile    TEXT NOT NULL,
    eab_kid    TEXT NOT NULL,
    contact    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE acme_certificates (
    serial    TEXT PRIMARY KEY,
    account   BIGINT NOT NULL,
    chain_pem TEXT NOT NULL
);
-- Each nonce is taken once, by a DELETE … RETURNING on any node.
CREATE TABLE acme_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX acme_nonces_expiry ON acme_nonces (expires_at);
-- status is what was stored: 'pending' until finalized (a client sees 'ready' or 'invalid'
-- worked out from the authorizations), 'processing' while one node finalizes it.
CREATE TABLE acme_orders (
    id              TEXT PRIMARY KEY,
    account         BIGINT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    expires_at      BIGINT NOT NULL,
    names           TEXT NOT NULL,
    certificate     TEXT,
    error           TEXT,
    replaces        TEXT,
    replaces_serial TEXT
);
CREATE INDEX acme_orders_by_account ON acme_orders (account, expires_at);
CREATE INDEX acme_orders_expiry ON acme_orders (expires_at);
CREATE TABLE acme_authz (
    id         TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES acme_orders (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    account    BIGINT NOT NULL,
    name       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    token      TEXT NOT NULL,
    status     TEXT NOT NULL
        CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    chosen     TEXT,
    validated  BIGINT,
    error      TEXT
);
CREATE INDEX acme_authz_by_order ON acme_authz (order_id, position);
