-- Organizations synced from Clerk, with the users table's rules: per-field versions, `tier` set
-- on insert only (by this default, or by the app), a `deleted_at` row is never resurrected.
CREATE TABLE IF NOT EXISTS organizations (
    id                text PRIMARY KEY,
    slug              text,
    name              text,
    image_url         text,
    tier              text NOT NULL DEFAULT 'free',
    clerk_updated_at  timestamptz,
    slug_version      timestamptz,
    name_version      timestamptz,
    image_url_version timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz,
    deleted_at        timestamptz
);
-- One row per (organization, user). `role` is versioned like a user field; `clerk_updated_at`
-- is the newest version applied (snapshot or deletion). A deletion records its version in
-- `deleted_version`: only a snapshot newer than it restores the membership (a re-invited
-- member), and never one of a deleted organization. `user_id` has no foreign key, so the table
-- works beside a custom users table (`PgUserStore::with_table`).
CREATE TABLE IF NOT EXISTS organization_memberships (
    organization_id  text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          text NOT NULL,
    role             text,
    role_version     timestamptz,
    clerk_updated_at timestamptz,
    deleted_version  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX IF NOT EXISTS organization_memberships_user_id ON organization_memberships (user_id);
