-- The SQLite mirror of migrations/postgres/20261202000001_organizations.sql; timestamps are
-- Unix milliseconds (INTEGER).
CREATE TABLE IF NOT EXISTS organizations (
    id                TEXT PRIMARY KEY NOT NULL,
    slug              TEXT,
    name              TEXT,
    image_url         TEXT,
    tier              TEXT NOT NULL DEFAULT 'free',
    clerk_updated_at  INTEGER,
    slug_version      INTEGER,
    name_version      INTEGER,
    image_url_version INTEGER,
    created_at        INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at        INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    last_seen_at      INTEGER,
    deleted_at        INTEGER
);
CREATE TABLE IF NOT EXISTS organization_memberships (
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    role             TEXT,
    role_version     INTEGER,
    clerk_updated_at INTEGER,
    deleted_version  INTEGER,
    created_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    deleted_at       INTEGER,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX IF NOT EXISTS organization_memberships_user_id ON organization_memberships (user_id);
