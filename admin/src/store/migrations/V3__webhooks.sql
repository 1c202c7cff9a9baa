-- Webhook subscriptions and deliveries (as the SQLite STATE/webhooks.sqlite3). Times are Unix
-- milliseconds.
CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    url         TEXT NOT NULL,
    events      JSONB NOT NULL,
    secret      TEXT NOT NULL,
    description TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant);
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    subscription    TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    created_ms      BIGINT NOT NULL,
    finished_ms     BIGINT,
    UNIQUE (subscription, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms, created_ms)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant, created_ms);
