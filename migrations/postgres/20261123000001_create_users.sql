-- Users synced from Clerk. `id` is Clerk's user id; `tier` is the app's and is only ever set on
-- insert (by this default) or by the app itself. `clerk_updated_at` is the version of the last
-- profile snapshot applied: older snapshots never overwrite newer ones.
CREATE TABLE IF NOT EXISTS users (
    id               text PRIMARY KEY,
    email            text,
    first_name       text,
    last_name        text,
    username         text,
    image_url        text,
    tier             text NOT NULL DEFAULT 'free',
    clerk_updated_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz,
    deleted_at       timestamptz
);
