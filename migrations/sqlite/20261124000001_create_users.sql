-- The SQLite mirror of migrations/postgres: same tables and rules, timestamps as Unix
-- milliseconds (INTEGER). `tier` is set on insert only; `clerk_updated_at` is the version of
-- the last applied snapshot; a row with `deleted_at` is never resurrected.
CREATE TABLE IF NOT EXISTS users (
    id               TEXT PRIMARY KEY NOT NULL,
    email            TEXT,
    first_name       TEXT,
    last_name        TEXT,
    username         TEXT,
    image_url        TEXT,
    tier             TEXT NOT NULL DEFAULT 'free',
    clerk_updated_at INTEGER,
    created_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    last_seen_at     INTEGER,
    deleted_at       INTEGER
);

-- Svix message ids of applied webhook deliveries; pruned after 30 days.
CREATE TABLE IF NOT EXISTS clerk_webhook_events (
    svix_id     TEXT PRIMARY KEY NOT NULL,
    received_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);
CREATE INDEX IF NOT EXISTS clerk_webhook_events_received_at ON clerk_webhook_events (received_at);
